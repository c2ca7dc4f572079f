"""What conversion produces, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ConversionError(Exception):
    """The input cannot become a DICOM object; the file goes to quarantine with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ConvertedObject:
    """A DICOM Part 10 file written by the converter, with the facts the queue indexes."""

    path: Path  # the Part 10 file the converter wrote (in the spool's staging folder)
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    source_sha256: str  # hash of the ingested source file, hex
    kind: str  # what the source was: "jpeg", "png", "bmp", "tiff", "pdf", "dicom"
    held_reason: str | None = None  # None: ready to send; else why it must wait (no identity)
