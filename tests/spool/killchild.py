"""Run a child that prints one promise per line, and kill -9 it at a chosen instant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_and_kill(args: list[str], kill_after: float | None) -> list[str]:
    """Run ``python ARGS``; kill -9 it ``kill_after`` s after it prints "ready" (None: once it
    prints "done"). Returns the whole lines it printed between the two, each a promise."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout is not None
    lines: list[str] = []
    ready, done = threading.Event(), threading.Event()

    def drain() -> None:  # keep the pipe empty so the child never blocks on a write
        assert proc.stdout is not None
        for raw in proc.stdout:
            if not raw.endswith(b"\n"):
                break  # cut short by the kill: not a promise
            line = raw.decode().strip()
            if line == "ready":
                ready.set()
            elif line == "done":
                done.set()
            else:
                lines.append(line)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert ready.wait(30), "child did not start"
        if kill_after is None:
            assert done.wait(60), "child did not finish"
        else:
            time.sleep(kill_after)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reader.join(10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return lines
