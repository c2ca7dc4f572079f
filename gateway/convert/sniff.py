"""Which kind of file this is, told by its first bytes (never by its name)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from gateway.convert.result import ConversionError

Kind = Literal["jpeg", "png", "bmp", "tiff", "pdf", "dicom"]

HEAD_BYTES = 132  # enough for the 128-byte Part 10 preamble and "DICM"

# DIB header sizes Windows and OS/2 bitmaps use; "BM" alone is too weak a signature.
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def sniff_bytes(head: bytes) -> Kind | None:
    """The kind whose signature ``head`` (the file's first bytes) carries, or None.

    "DICM" at offset 128 is tested first: PS3.10 7.1 lets the 128-byte preamble hold anything,
    and dual-personality files put a TIFF (or any other) header there, so a file with that
    prefix is DICOM whatever its first bytes are. The other signatures all sit at offset 0 and
    cannot overlap one another, so their order does not matter.
    """
    if len(head) >= HEAD_BYTES and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES
    ):
        return "bmp"
    return None


def _looks_like_bare_dataset(head: bytes) -> bool:
    # A dataset without preamble starts with a group 0002 or 0008 tag, little endian.
    return head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) >= 8


def sniff_file(path: Path) -> Kind:
    """The kind of the file at ``path``; ConversionError when it is empty or unknown."""
    try:
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as exc:
        raise ConversionError(f"cannot read file: {exc.strerror or exc}") from exc
    if not head:
        raise ConversionError("empty file (0 bytes)")
    kind = sniff_bytes(head)
    if kind is not None:
        return kind
    if _looks_like_bare_dataset(head):
        raise ConversionError("DICOM data without the Part 10 preamble and 'DICM' prefix")
    raise ConversionError("unrecognised file type (not JPEG, PNG, BMP, TIFF, PDF or DICOM)")
