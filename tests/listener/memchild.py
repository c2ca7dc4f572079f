"""Child process for the memory test: runs a listener and reports its memory on request.

Usage: python -m tests.listener.memchild
Prints ``READY <port>``; then, per line read on stdin: ``reset`` resets the peak (VmHWM) to the
current RSS, ``mem`` prints one JSON object (rss_kib, hwm_kib, stats), ``quit`` stops and exits.
The peak is the kernel's VmHWM, reset through /proc/self/clear_refs (see tests/forward/memchild).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from gateway.listener.server import DicomListener
from tests.listener.support import LISTENER_AE, listener_settings


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    settings = listener_settings(handshake_timeout=10.0, network_timeout=10.0)
    listener = DicomListener(settings, LISTENER_AE, None, (), logging.getLogger("memchild"))
    listener.start()
    print(f"READY {listener.address[1]}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "reset":
            Path("/proc/self/clear_refs").write_text("5")
            print("OK", flush=True)
        elif command == "mem":
            report = {
                "rss_kib": _status_kib("VmRSS"),
                "hwm_kib": _status_kib("VmHWM"),
                "stats": listener.stats(),
            }
            print(json.dumps(report), flush=True)
        elif command == "quit":
            break
    listener.stop()


if __name__ == "__main__":
    main()
