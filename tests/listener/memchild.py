"""Child process for the memory test: runs a listener and reports its memory on request.

Usage: python -m tests.listener.memchild [--tls CA CERT KEY] [--handshake-timeout S]
Prints ``READY <port>``; then, per line read on stdin: ``reset`` resets the peak (VmHWM) to the
current RSS, ``mem`` prints one JSON object (rss_kib, hwm_kib, threads, stats), ``quit`` stops
and exits.
The peak is the kernel's VmHWM, reset through /proc/self/clear_refs (see tests/forward/memchild).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gateway.config import TlsSettings
from gateway.forward.tlsctx import server_context
from gateway.listener.server import DicomListener
from tests.listener.support import LISTENER_AE, listener_settings


def _status_number(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls", nargs=3, type=Path, metavar=("CA", "CERT", "KEY"))
    parser.add_argument("--handshake-timeout", type=float, default=10.0)
    args = parser.parse_args()
    # A flood makes thousands of WARNING lines ("peer dropped"); errors still show.
    logging.basicConfig(level=logging.ERROR)
    settings = listener_settings(handshake_timeout=args.handshake_timeout, network_timeout=10.0)
    context = None
    if args.tls is not None:
        ca, cert, key = args.tls
        context = server_context(TlsSettings(ca=ca, cert=cert, key=key))
    listener = DicomListener(settings, LISTENER_AE, context, (), logging.getLogger("memchild"))
    listener.start()
    print(f"READY {listener.address[1]}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "reset":
            Path("/proc/self/clear_refs").write_text("5")
            print("OK", flush=True)
        elif command == "mem":
            report = {
                "rss_kib": _status_number("VmRSS"),
                "hwm_kib": _status_number("VmHWM"),
                "threads": _status_number("Threads"),
                "stats": listener.stats(),
            }
            print(json.dumps(report), flush=True)
        elif command == "quit":
            break
    listener.stop()


if __name__ == "__main__":
    main()
