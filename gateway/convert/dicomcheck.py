"""Checks on a DICOM Part 10 file that is forwarded as it is, in bounded memory.

pydicom 3.0.2 is not used to judge these files because of traps reproduced with it: an element
shorter than its declared length (a truncated Pixel Data) reads without error, a file cut in
its meta header reads as an empty dataset, Deflated Explicit VR Little Endian is inflated in
memory in one go, deep sequence nesting raises RecursionError, and a huge declared length is
allocated. This module walks the encoded elements instead: it reads only tags, VRs and lengths,
seeks over values, checks every value lies inside its item and the file, bounds nesting depth
and element count, and reads just the few UIDs it validates. No path is ever built from a value.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID

from gateway.convert.result import ConversionError
from gateway.convert.uids import is_valid_uid

MAX_DEPTH = 32  # nesting seen in practice stays below 10; pydicom reads 32 without recursing out
MAX_ELEMENTS = 2_000_000  # bounds the walk's time on a file of millions of tiny elements
COPY_CHUNK = 1024 * 1024

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_META_UIDS = {
    0x00020002: "meta SOP Class UID",
    0x00020003: "meta SOP Instance UID",
    0x00020010: "Transfer Syntax UID",
}
_TOP_UIDS = {
    0x00080016: "SOP Class UID",
    0x00080018: "SOP Instance UID",
    0x0020000D: "Study Instance UID",
    0x0020000E: "Series Instance UID",
}
_MAX_UID_BYTES = 128  # a longer value is no UID; it is not read


@dataclass(frozen=True)
class Part10Facts:
    """What the checked file says about itself."""

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def copy_with_hash(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` in chunks; the SHA-256 (hex) of the bytes copied."""
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def check_part10(path: Path) -> Part10Facts:
    """Validate the structure and identifying UIDs of a Part 10 file; ConversionError if bad."""
    with path.open("rb", buffering=64 * 1024) as f:
        size = path.stat().st_size
        walker = _Walker(f, size)
        meta = walker.read_meta()
        syntax = UID(meta.get(0x00020010, ""))
        if not syntax:
            raise ConversionError("DICOM file meta has no Transfer Syntax UID")
        if not syntax.is_transfer_syntax:
            raise ConversionError("unknown transfer syntax in DICOM file meta")
        if syntax.is_deflated:
            # Inflating is unbounded (a 1.5 MB file may expand to gigabytes); refused outright.
            raise ConversionError("deflated transfer syntax is not accepted")
        top = walker.walk_dataset(
            end=None,
            delimited=False,
            depth=0,
            implicit=syntax.is_implicit_VR,
            little=syntax.is_little_endian,
        )
    for tag, label in (*_META_UIDS.items(), *_TOP_UIDS.items()):
        value = meta.get(tag) if tag >> 16 == 2 else top.get(tag)
        if not value:
            raise ConversionError(f"DICOM file has no {label}")
        if not is_valid_uid(value):
            raise ConversionError(f"DICOM file has an invalid {label}")
    if meta[0x00020003] != top[0x00080018]:
        raise ConversionError("meta SOP Instance UID differs from the dataset's SOP Instance UID")
    if meta[0x00020002] != top[0x00080016]:
        raise ConversionError("meta SOP Class UID differs from the dataset's SOP Class UID")
    return Part10Facts(
        transfer_syntax_uid=str(syntax),
        sop_class_uid=top[0x00080016],
        sop_instance_uid=top[0x00080018],
        study_instance_uid=top[0x0020000D],
        series_instance_uid=top[0x0020000E],
    )


class _Walker:
    """Walks encoded elements, seeking over values; keeps only the UIDs it was asked for."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.elements = 0

    def read_exact(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ConversionError("truncated DICOM file")
        return data

    def read_meta(self) -> dict[int, str]:
        """File Meta Information: always Explicit VR Little Endian, group 0002."""
        if self.size < 132:
            raise ConversionError("truncated DICOM file (no Part 10 header)")
        self.f.seek(128)
        if self.read_exact(4) != b"DICM":
            raise ConversionError("no DICOM Part 10 'DICM' prefix")
        values: dict[int, str] = {}
        while True:
            start = self.f.tell()
            peek = self.f.read(2)
            if len(peek) < 2 or int.from_bytes(peek, "little") != 0x0002:
                self.f.seek(start)
                break
            self.f.seek(start)
            tag, _vr, length = self._header(implicit=False, little=True)
            if length == _UNDEFINED:
                raise ConversionError("undefined length in DICOM file meta")
            self._check_fits(tag, length, None)
            if tag in _META_UIDS:
                values[tag] = self._read_uid(length)
            else:
                self.f.seek(length, 1)
        if not values:
            raise ConversionError("DICOM file meta is empty")
        return values

    def walk_dataset(
        self, end: int | None, delimited: bool, depth: int, implicit: bool, little: bool
    ) -> dict[int, str]:
        """Walk a dataset up to ``end``, its item delimiter, or (top level) the end of file."""
        found: dict[int, str] = {}
        while True:
            position = self.f.tell()
            if end is not None and position >= end:
                if position > end:
                    raise ConversionError("DICOM element runs past the end of its item")
                return found
            if end is None and not delimited and position == self.size:
                return found
            tag, vr, length = self._header(implicit, little)
            if tag == _ITEM_END and delimited:
                return found
            if tag >> 16 == 0xFFFE:
                raise ConversionError("misplaced item or delimiter tag in DICOM dataset")
            self.elements += 1
            if self.elements > MAX_ELEMENTS:
                raise ConversionError(f"DICOM file has more than {MAX_ELEMENTS} elements")
            if length == _UNDEFINED:
                self._undefined_value(tag, vr, depth, implicit, little)
                continue
            self._check_fits(tag, length, end)
            if self._is_sequence(tag, vr, implicit):
                inner_implicit = implicit or vr == b"UN"  # UN sequences are implicit VR LE
                self.walk_sequence(self.f.tell() + length, depth + 1, inner_implicit, little)
            elif depth == 0 and tag in _TOP_UIDS:
                found[tag] = self._read_uid(length)
            else:
                self.f.seek(length, 1)

    def walk_sequence(self, end: int | None, depth: int, implicit: bool, little: bool) -> None:
        """Walk the items of a sequence up to ``end`` or its sequence delimiter."""
        if depth > MAX_DEPTH:
            raise ConversionError(f"DICOM sequences nested deeper than {MAX_DEPTH} levels")
        while end is None or self.f.tell() < end:
            tag, length = self._item_header(little)
            if tag == _SEQ_END and end is None:
                return
            if tag != _ITEM:
                raise ConversionError("DICOM sequence holds something that is not an item")
            if length == _UNDEFINED:
                self.walk_dataset(None, True, depth, implicit, little)
            else:
                self._check_fits(tag, length, end)
                self.walk_dataset(self.f.tell() + length, False, depth, implicit, little)
        if self.f.tell() != end:
            raise ConversionError("DICOM sequence item runs past the end of its sequence")

    def _undefined_value(
        self, tag: int, vr: bytes | None, depth: int, implicit: bool, little: bool
    ) -> None:
        if tag == _PIXEL_DATA:
            self._walk_fragments(little)
        elif vr in (b"SQ", b"UN", None):
            # UN of undefined length is a sequence in Implicit VR Little Endian (PS3.5 6.2.2).
            self.walk_sequence(None, depth + 1, implicit or vr == b"UN", little)
        else:
            raise ConversionError(f"undefined length on non-sequence element {_tag_text(tag)}")

    def _walk_fragments(self, little: bool) -> None:
        """Encapsulated Pixel Data: items of defined length up to the sequence delimiter."""
        while True:
            tag, length = self._item_header(little)
            if tag == _SEQ_END:
                return
            if tag != _ITEM or length == _UNDEFINED:
                raise ConversionError("corrupt encapsulated Pixel Data")
            self._check_fits(tag, length, None)
            self.f.seek(length, 1)

    def _header(self, implicit: bool, little: bool) -> tuple[int, bytes | None, int]:
        order = "<" if little else ">"
        raw = self.read_exact(8)
        group, element = struct.unpack(order + "HH", raw[:4])
        tag = group << 16 | element
        if implicit or group == 0xFFFE:
            return tag, None, struct.unpack(order + "L", raw[4:])[0]
        vr = raw[4:6]
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise ConversionError(f"invalid VR at element {_tag_text(tag)}")
        if vr in _LONG_VRS:
            return tag, vr, struct.unpack(order + "L", self.read_exact(4))[0]
        return tag, vr, struct.unpack(order + "H", raw[6:])[0]

    def _item_header(self, little: bool) -> tuple[int, int]:
        group, element, length = struct.unpack(("<" if little else ">") + "HHL", self.read_exact(8))
        return group << 16 | element, length

    def _check_fits(self, tag: int, length: int, end: int | None) -> None:
        limit = self.size if end is None else end
        if self.f.tell() + length > limit:
            where = "file" if end is None else "enclosing item"
            raise ConversionError(
                f"DICOM element {_tag_text(tag)} declares {length} bytes, beyond the end of the "
                f"{where} (truncated or corrupt)"
            )

    def _read_uid(self, length: int) -> str:
        if length > _MAX_UID_BYTES:
            self.f.seek(length, 1)
            return "invalid"
        raw = self.read_exact(length).rstrip(b"\x00 ")
        return raw.decode("ascii", errors="replace")

    @staticmethod
    def _is_sequence(tag: int, vr: bytes | None, implicit: bool) -> bool:
        if vr == b"SQ":
            return True
        if vr == b"UN" or implicit:
            # pydicom reads a known sequence stored as UN (or implicit VR) as a sequence.
            try:
                return bool(dictionary_VR(tag) == "SQ")
            except KeyError:
                return False
        return False


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
