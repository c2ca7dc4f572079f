"""What an ingest source hands on: one complete file with what is known about it."""

from __future__ import annotations

import os
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
    # The file's path inside its drop folder, as os.fsdecode gives it (an undecodable byte is a
    # surrogate escape). None: the file's own name. Part of the created object's SOP Instance
    # UID, so two files never become one instance, and recorded as the object's source.
    name: str | None = None

    @property
    def file_name(self) -> str:
        """The file's path inside its drop folder (surrogate escapes kept, see ``name``)."""
        return self.name if self.name is not None else self.path.name

    @property
    def identity(self) -> PatientIdentity:
        """The patient identity the object carries (the binding's)."""
        return self.binding.identity


_BYTE_ESCAPES = (0xDC80, 0xDCFF)  # surrogateescape's range: bytes 0x80-0xff


def printable_name(name: str) -> str:
    """A file name as text that can be shown and stored anywhere, and still tells the bytes.

    Bytes that are not UTF-8 (surrogate escapes from os.fsdecode) become ``\\xNN``, and so do
    characters that cannot be printed (controls, invisible format characters: a newline in a
    file name would otherwise split a CLI line). A real backslash becomes ``\\\\``, so a name
    typed as ``M\\xfcller`` and one holding the byte 0xfc never look the same. This is for
    people to read, not to open the file with.
    """
    try:
        # Surrogate escapes are the name's own bytes: os.fsdecode made them, fsencode undoes it.
        text = os.fsencode(name).decode("utf-8", "surrogateescape")
        from_bytes = True
    except UnicodeEncodeError:  # a lone surrogate os.fsdecode cannot have made: show its code
        text, from_bytes = name, False
    return "".join(_shown(c, from_bytes) for c in text)


def _shown(char: str, from_bytes: bool) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if from_bytes and _BYTE_ESCAPES[0] <= code <= _BYTE_ESCAPES[1]:
        return f"\\x{code - 0xDC00:02x}"  # the undecodable byte itself
    if char.isprintable():
        return char
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
