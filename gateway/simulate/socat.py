"""A pseudo-terminal pair made by socat: a null-modem cable in software, for tests and the demo.

Bytes written to one end come out of the other. Killing socat is unplugging the cable (both
ends fail); starting it again with the same link names plugs it back in (new pts numbers behind
the same names, as udev's stable name does for a USB adapter).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


class SocatMissingError(RuntimeError):
    """socat is not installed (Debian: apt install socat)."""


class PtyPair:
    """``socat pty,link=A pty,link=B`` started and stopped by its owner (and only by it)."""

    def __init__(self, a: Path, b: Path, log: Path | None = None) -> None:
        self.a = a
        self.b = b
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> PtyPair:
        """Start socat and wait until both link names exist."""
        binary = shutil.which("socat")
        if binary is None:
            raise SocatMissingError("socat is not installed")
        for link in (self.a, self.b):
            if link.is_symlink():
                link.unlink()  # left by a socat that was killed
        out = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "-d",
                    "-d",
                    # ignoreeof: one end closing (the simulator finishing) must not end the
                    # cable; only stopping socat does, as pulling the adapter out would.
                    f"pty,raw,echo=0,ignoreeof,link={self.a}",
                    f"pty,raw,echo=0,ignoreeof,link={self.b}",
                ],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                # Its own session: Ctrl-C in a terminal signals the whole foreground process
                # group, and socat dying with it pulled the cable out from under the gateway
                # before the gateway had closed its port (the demo's "serial port lost" error
                # on every Ctrl-C). Only its owner stops it, with stop().
                start_new_session=True,
            )
        finally:
            if self.log is not None and not isinstance(out, int):
                out.close()
        deadline = time.monotonic() + timeout
        while not (self.a.exists() and self.b.exists()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"socat exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("socat made no pty pair")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop socat (both ends are hung up) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> PtyPair:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
