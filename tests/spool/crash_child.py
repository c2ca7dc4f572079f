"""A process for the kill -9 tests: works the spool in a loop and reports each step on stdout.

    python tests/spool/crash_child.py enqueue STATE_DIR DEST[,DEST...] SEED
        prints "ready", then for every enqueue that returned: "<object_id> <sha256> <duplicate>"
    python tests/spool/crash_child.py deliver STATE_DIR DEST[,DEST...] SEED
        prints "ready", then "sent <delivery_id>", "failed <delivery_id>", "retry <delivery_id>"
        after each mark returned, and "done" when nothing is left to claim

A line is printed (and flushed) only after the spool call returned, so every line the parent
reads is a promise the spool must keep after the kill.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from pathlib import Path

from gateway.clock import SystemClock
from gateway.spool.store import Spool
from tests.spool.objects import stage


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def enqueue_forever(spool: Spool, rng: random.Random) -> None:
    """Enqueue random payloads; now and then one already queued (must come back duplicate)."""
    done: list[tuple[bytes, str]] = []
    while True:
        if done and rng.random() < 0.1:
            data, uid = rng.choice(done)
        else:
            data, uid = rng.randbytes(rng.randint(1, 48_000)), ""
        obj = stage(spool, data, uid=uid or None)
        result = spool.enqueue(obj, "crash")
        done.append((data, obj.sop_instance_uid))
        _say(f"{result.object_id} {hashlib.sha256(data).hexdigest()} {int(result.duplicate)}")


def deliver_until_empty(spool: Spool, rng: random.Random) -> None:
    """Claim round-robin over the destinations and mark sent (some retried or failed)."""
    clock = SystemClock()
    while True:
        busy = False
        for dest in spool.destinations:
            entry = spool.claim_next(dest)
            if entry is None:
                continue
            busy = True
            roll = rng.random()
            if roll < 0.05:
                spool.mark_failed(entry.delivery_id, "dimse_failure", "refused", 0xA700)
                _say(f"failed {entry.delivery_id}")
            elif roll < 0.15:
                spool.mark_retry(entry.delivery_id, "timeout", "slow", clock.now())
                _say(f"retry {entry.delivery_id}")
            else:
                spool.mark_sent(entry.delivery_id)
                _say(f"sent {entry.delivery_id}")
        if not busy:
            _say("done")
            time.sleep(60)
            return


def main(argv: list[str]) -> None:
    mode, state_dir, dests, seed = argv
    spool = Spool(Path(state_dir), dests.split(","), 1 << 40, SystemClock())
    spool.open()
    _say("ready")
    rng = random.Random(int(seed))
    if mode == "enqueue":
        enqueue_forever(spool, rng)
    else:
        deliver_until_empty(spool, rng)


if __name__ == "__main__":
    main(sys.argv[1:])
