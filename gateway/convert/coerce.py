"""Rewrite the header of a checked Part 10 file, keeping its instance and its bulk data as they are.

Used to bind a held object to a patient (reason CORRECT) and, by the listener, to coerce inbound
objects from the worklist (reason COERCE). The replaced values go into the Original Attributes
Sequence (0400,0561), so the PACS can see what the gateway changed, when, and why.

Memory: pydicom reads the header only. Reading stops at the first element of group 7FE0 (Pixel
Data and whatever follows is the "tail"), and top-level binary values longer than
``BULK_THRESHOLD`` (an Encapsulated Document, an icon, private blobs) are deferred by pydicom and
never loaded. The header is re-encoded by pydicom; the deferred values and the tail are copied
from the source in 1 MiB chunks, so they stay byte-identical and a 500 MiB object costs no more
memory than a small one. ``apply`` therefore never sees those elements.
"""

from __future__ import annotations

import copy
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_partial
from pydicom.filewriter import correct_ambiguous_vr, write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from gateway import product
from gateway.convert.modules import apply_character_set

BULK_THRESHOLD = 64 * 1024  # top-level binary values above this are copied, not loaded
MODIFYING_SYSTEM = "EDGEGW"
REASON_COERCE = "COERCE"  # values replaced on receipt, from the worklist (local policy)
REASON_CORRECT = "CORRECT"  # values corrected by an operator (reconciliation of a held object)
_REASONS = {REASON_COERCE, REASON_CORRECT}
_TAIL_GROUP_START = 0x7FE00000  # Pixel Data's group and everything after it: copied as it is
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_CHUNK = 1024 * 1024
# Not recorded as changes: the history itself, and the character set (the recorded values are
# re-encoded in the new one, so recording the old declaration would misdescribe them).
_NOT_RECORDED = {BaseTag(0x04000561), BaseTag(0x00080005)}


@dataclass(frozen=True)
class RewriteFacts:
    """What the queue indexes about a rewritten object."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    size: int  # bytes of the written file


class CoerceError(ValueError):
    """The change would alter what must stay the same (SOP Class/Instance UID, bulk data)."""


@dataclass(frozen=True)
class _Bulk:
    """A top-level value left in the source file: where it is, and how to re-encode its header."""

    tag: int
    vr: str | None
    offset: int
    length: int


def rewrite_part10(
    src: Path,
    dst: Path,
    apply: Callable[[Dataset], None],
    *,
    reason: str,
    keep_original: bool,
    modified_at: float | None = None,
    modifying_system: str = MODIFYING_SYSTEM,
) -> RewriteFacts:
    """Write ``src`` with ``apply``'s changes to the new file ``dst`` (caller fsyncs and renames).

    ``src`` must already have passed our Part 10 checks (gateway.convert.dicomcheck); deflated
    transfer syntaxes are not supported. With ``keep_original`` the replaced and removed values
    are recorded in a new item of the Original Attributes Sequence. ``modified_at`` (epoch
    seconds, default now) is its Attribute Modification DateTime, written in UTC.
    """
    if reason not in _REASONS:
        raise ValueError(f"reason must be one of {sorted(_REASONS)}")
    with src.open("rb") as fin:
        ds = read_partial(
            fin,
            stop_when=lambda tag, _vr, _length: int(tag) >= _TAIL_GROUP_START,
            defer_size=BULK_THRESHOLD,
        )
        tail_start = fin.tell()
        meta = ds.file_meta
        # We write the new file: PS3.10 7.1, the implementation that wrote it is named.
        meta.ImplementationClassUID = UID(product.IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = product.IMPLEMENTATION_VERSION_NAME
        syntax = meta.TransferSyntaxUID
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
        bulk = _take_bulk(ds, implicit)
        # Every value is decoded now, with the source's character set, so that a change of
        # Specific Character Set below re-encodes all text instead of mixing encodings.
        ds.walk(lambda _ds, _elem: None)
        before = {elem.tag: copy.deepcopy(elem) for elem in ds}
        uids = (ds.SOPClassUID, ds.SOPInstanceUID)
        apply(ds)
        if (ds.get("SOPClassUID"), ds.get("SOPInstanceUID")) != uids:
            raise CoerceError("the change must keep the SOP Class and SOP Instance UIDs")
        if any(elem.tag >= _TAIL_GROUP_START or int(elem.tag) in bulk for elem in ds):
            raise CoerceError("the change must not touch pixel data or bulk values")
        if keep_original:
            _record_original(ds, before, reason, modified_at, modifying_system)
        apply_character_set(ds)
        correct_ambiguous_vr(ds, little)
        with dst.open("xb") as raw:
            _write(raw, fin, ds, meta, bulk, tail_start, implicit=implicit, little=little)
    return RewriteFacts(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        transfer_syntax_uid=str(syntax),
        size=dst.stat().st_size,
    )


def _take_bulk(ds: Dataset, implicit: bool) -> dict[int, _Bulk]:
    """Remove deferred binary values from ``ds``; the rest of the deferred ones are loaded."""
    bulk: dict[int, _Bulk] = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.value is not None or raw.length == 0:
            continue
        vr = raw.VR if raw.VR is not None else _dictionary_vr(int(tag))
        if vr not in _BINARY_VRS:
            continue  # a large text or sequence value: loaded, so it is re-encoded correctly
        bulk[int(tag)] = _Bulk(int(tag), None if implicit else vr, raw.value_tell, raw.length)
        del ds[tag]
    return bulk


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"  # private or unknown: opaque bytes


def _record_original(
    ds: Dataset,
    before: dict[BaseTag, DataElement],
    reason: str,
    modified_at: float | None,
    modifying_system: str,
) -> None:
    """Append an Original Attributes Sequence item holding every value replaced or removed."""
    modified = Dataset()
    for tag, old in before.items():
        if tag in _NOT_RECORDED:
            continue
        if tag not in ds or ds[tag] != old:
            modified.add(old)
    if len(modified) == 0:
        return
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([modified])
    item.SourceOfPreviousValues = ""  # type 2: the gateway does not know who set them
    item.AttributeModificationDateTime = _dicom_utc(
        time.time() if modified_at is None else modified_at
    )
    item.ModifyingSystem = modifying_system
    item.ReasonForTheAttributeModification = reason
    history = ds.get("OriginalAttributesSequence")
    items = list(history) if history is not None else []
    ds.OriginalAttributesSequence = Sequence([*items, item])


def _dicom_utc(epoch: float) -> str:
    whole = int(epoch)
    micros = round((epoch - whole) * 1_000_000) % 1_000_000
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(whole)) + f".{micros:06d}+0000"


def _write(
    raw: BinaryIO,
    fin: BinaryIO,
    ds: Dataset,
    meta: Dataset,
    bulk: dict[int, _Bulk],
    tail_start: int,
    *,
    implicit: bool,
    little: bool,
) -> None:
    """Preamble, File Meta, then the header in tag order with the bulk values spliced in."""
    raw.write(b"\x00" * 128 + b"DICM")
    fp = DicomFileLike(raw)
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_file_meta_info(fp, meta, enforce_standard=True)  # type: ignore[arg-type]
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    charset = ds.get("SpecificCharacterSet") or default_encoding
    pending = sorted(ds.keys())
    for tag in sorted(bulk):
        _write_elements(fp, ds, [t for t in pending if t < tag], charset)
        pending = [t for t in pending if t > tag]
        raw.write(_element_header(bulk[tag], little=little))
        fin.seek(bulk[tag].offset)
        _copy(fin, raw, bulk[tag].length)
    _write_elements(fp, ds, pending, charset)
    fin.seek(tail_start)
    _copy(fin, raw, None)


def _write_elements(fp: DicomFileLike, ds: Dataset, tags: list[BaseTag], charset: object) -> None:
    if not tags:
        return
    part = Dataset()
    for tag in tags:
        part.add(ds[tag])
    write_dataset(fp, part, parent_encoding=charset)  # type: ignore[arg-type]


def _element_header(bulk: _Bulk, *, little: bool) -> bytes:
    order = "<" if little else ">"
    tag = struct.pack(order + "HH", bulk.tag >> 16, bulk.tag & 0xFFFF)
    if bulk.vr is None:  # implicit VR
        return tag + struct.pack(order + "I", bulk.length)
    if bulk.vr in _LONG_VRS:
        return tag + bulk.vr.encode() + b"\x00\x00" + struct.pack(order + "I", bulk.length)
    return tag + bulk.vr.encode() + struct.pack(order + "H", bulk.length)


def _copy(fin: BinaryIO, fout: BinaryIO, length: int | None) -> None:
    """Copy ``length`` bytes (None: to the end) in chunks; a short source is a broken invariant."""
    left = length
    while left is None or left > 0:
        chunk = fin.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            if left:
                raise CoerceError("source file is shorter than its elements declare")
            return
        fout.write(chunk)
        if left is not None:
            left -= len(chunk)
