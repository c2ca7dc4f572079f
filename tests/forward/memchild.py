"""Child process for the memory test: send a warm-up and a large object, report peak RSS.

Usage: python -m tests.forward.memchild PORT WARMUP_FILE BIG_FILE [CA CERT KEY]
Prints one JSON object: outcome kinds and the peak RSS (KiB) before and after the large send.

The peak is the kernel's per-process high-water mark, VmHWM, reset after the warm-up through
/proc/self/clear_refs. ``resource.getrusage().ru_maxrss`` cannot be used here: Linux carries the
high-water mark across fork and exec, so a child of the test process starts with the parent's
peak (hundreds of MB after building the 60 MB object) and hides anything smaller.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gateway.clock import SystemClock
from gateway.config import TlsSettings
from gateway.forward.sender import StoreSender
from gateway.forward.tlsctx import client_context
from tests.forward.conftest import make_destination
from tests.forward.objects import entry_for


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> None:
    port, warmup, big = int(argv[0]), Path(argv[1]), Path(argv[2])
    tls = None
    if len(argv) == 6:
        tls = TlsSettings(ca=Path(argv[3]), cert=Path(argv[4]), key=Path(argv[5]))
    destination = make_destination(port, host="localhost", tls=tls)
    context = client_context(tls) if tls else None
    sender = StoreSender(destination, "EDGE_GW", context, SystemClock())
    first = sender.send(entry_for(warmup, 1))
    Path("/proc/self/clear_refs").write_text("5")  # peak := current RSS
    before = _peak_kib()
    second = sender.send(entry_for(big, 2))
    after = _peak_kib()
    sender.close()
    print(
        json.dumps(
            {
                "warmup": first.kind,
                "big": second.kind,
                "reason": second.reason,
                "before_kib": before,
                "after_kib": after,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
