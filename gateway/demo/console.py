"""What the demo says on the console: the banner, one line per delivered object, the ending.

Rules:

- Every line starts with ``demo:`` and is written whole (threads never interleave within one).
- A delivery (the demo PACS stored an object and answers Success) is one line: the PACS's file,
  the SOP class by name, the patient ID (demo patients only). Deliveries made while the banner
  is still being printed wait and follow it, so the banner reads as one block.
- With ``--duration`` the demo says when it stops by itself; without, that Ctrl-C stops it.
- At the end it says where the working folder is and that it is kept (the commands it printed
  still work on it), then the summary ``demo: <received> received, <failed> failed`` last.
"""

from __future__ import annotations

import shlex
import threading
from pathlib import Path
from typing import TextIO

from pydicom import Dataset
from pydicom.uid import UID


def delivery_line(stored: Path, dataset: Dataset) -> str:
    """One delivered object as the demo prints it."""
    sop_class = UID(str(dataset.get("SOPClassUID", "")))
    name = sop_class.name if sop_class else "unknown SOP class"
    patient = dataset.get("PatientID", "") or "none"
    return f"demo: delivered        {stored.name}  {name}  (patient {patient})"


def stop_hint(duration: float | None) -> str:
    """How the demo will end."""
    if duration is None:
        return "press Ctrl-C to stop"
    return f"stops by itself after {duration:g} s (Ctrl-C stops it sooner)"


def kept_lines(root: Path) -> list[str]:
    """Where the working folder is, and that it stays."""
    return [
        f"demo: working folder   {root} is kept (its files, queue and configuration);",
        f"demo:                  remove it with: rm -rf {shlex.quote(str(root))}",
    ]


class DemoConsole:
    """The demo's stdout: whole lines under one lock; deliveries held back until ``open()``."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._open = False
        self._waiting: list[str] = []

    def say(self, line: str) -> None:
        """A banner or closing line, printed now."""
        with self._lock:
            self._write(line)

    def event(self, line: str) -> None:
        """A line about something that happened: now if the banner is out, else after it."""
        with self._lock:
            if self._open:
                self._write(line)
            else:
                self._waiting.append(line)

    def open(self) -> None:
        """The banner is complete: print what waited, then events as they come."""
        with self._lock:
            self._open = True
            for line in self._waiting:
                self._write(line)
            self._waiting.clear()

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
