"""What an ingest source hands on: one complete file with what is known about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.identity import PatientIdentity
from gateway.worklist.binding import Binding


@dataclass(frozen=True)
class RawItem:
    """A complete, settled file taken from an ingest source, ready to convert."""

    path: Path  # where the file is now (inside the drop folder)
    source: str  # name of the ingest source, e.g. the [[ingest.folder]] name
    size: int
    mtime: float  # seconds since the epoch, from stat(); used as acquisition time
    binding: Binding  # the worklist step or identity the object gets, or why it is held

    @property
    def identity(self) -> PatientIdentity:
        """The patient identity the object carries (the binding's)."""
        return self.binding.identity
