"""Reading a queued object file for sending: its file meta, or (fallback only) the whole data set.

The normal path never loads the data set: the sender streams the file. Loading happens only
when the PACS refuses the object's own transfer syntax (then :mod:`gateway.forward.transcode`
converts it), and is bounded by ``max_bytes`` because a 1 GB box cannot hold several copies of
a large object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from gateway.forward.contexts import Route
from gateway.forward.transcode import (
    TranscodeError,
    decode_pixel_data,
    to_little_endian,
)

# Decoding keeps the pixel array, the re-encoded bytes and pynetdicom's copy in memory at once.
MAX_IN_MEMORY_BYTES = 64 * 1024 * 1024
# Every object was checked before it was queued: a queued file that is gone or no longer DICOM
# was damaged in the state folder since, and only its source can give it again.
RESEND = "resend the object from its source"
NOT_DICOM = f"queued file is no longer DICOM (damaged after it was queued); {RESEND}"


class PayloadError(Exception):
    """The queued file cannot be sent; ``permanent`` says whether trying again could help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class PayloadInfo:
    """What the file meta says about the object."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def read_info(path: Path) -> PayloadInfo:
    """The object's SOP class, instance and transfer syntax from its file meta, nothing more."""
    try:
        meta = read_file_meta_info(path)
    except FileNotFoundError:
        raise PayloadError(f"queued file is missing; {RESEND}", permanent=True) from None
    except InvalidDicomError:
        raise PayloadError(NOT_DICOM, permanent=True) from None
    except OSError as exc:
        raise PayloadError(_unreadable(exc), permanent=False) from None
    except Exception as exc:  # noqa: BLE001 - a corrupt file meta raises many kinds of error
        raise PayloadError(
            f"queued file has unreadable file meta ({type(exc).__name__}); {RESEND}",
            permanent=True,
        ) from None
    values = [meta.get(k) for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")]
    values.append(meta.get("TransferSyntaxUID"))
    if not all(isinstance(v, str) and v for v in values):
        raise PayloadError(
            f"queued file has incomplete file meta information; {RESEND}", permanent=True
        )
    sop_class, sop_instance, syntax = (str(v) for v in values)
    return PayloadInfo(sop_class, sop_instance, syntax)


def _decoded_size(ds: Dataset) -> int:
    """Bytes of the pixel data once decoded, from the image pixel module."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    return rows * cols * frames * samples * ((bits + 7) // 8)


def load_reencodable(path: Path, max_bytes: int = MAX_IN_MEMORY_BYTES) -> Dataset:
    """The whole data set, for pynetdicom to re-encode in another uncompressed syntax."""
    size = _file_size(path)
    if size > max_bytes:
        raise PayloadError(
            f"object of {size} bytes is too large to re-encode in memory (limit {max_bytes})",
            permanent=True,
        )
    return _read(path)


def load_decoded(path: Path, max_bytes: int = MAX_IN_MEMORY_BYTES) -> Dataset:
    """The data set with its pixel data decoded, as Explicit VR Little Endian.

    The SOP Instance UID is kept: a change of transfer syntax is the same instance
    (pydicom's ``decompress()`` would otherwise make a new UID, and a resend would then be a
    different object to the PACS). Colour data are converted to RGB, as any viewer would.
    """
    _file_size(path)
    ds = _read(path, defer=True)
    need = _decoded_size(ds)
    if need > max_bytes:
        raise PayloadError(
            f"decoded pixel data of {need} bytes is too large to hold in memory "
            f"(limit {max_bytes})",
            permanent=True,
        )
    try:
        decode_pixel_data(ds)
    except TranscodeError as exc:
        raise PayloadError(str(exc), permanent=True) from None
    return ds


def load_converted(path: Path, route: Route, max_bytes: int = MAX_IN_MEMORY_BYTES) -> Dataset:
    """The data set ready for pynetdicom to send over ``route`` (any but AS_STORED and NONE)."""
    if route is Route.DECODE:
        return load_decoded(path, max_bytes)
    ds = load_reencodable(path, max_bytes)
    if route is Route.TO_LITTLE_ENDIAN:
        try:
            to_little_endian(ds)
        except TranscodeError as exc:
            raise PayloadError(str(exc), permanent=True) from None
    return ds


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise PayloadError(f"queued file is missing; {RESEND}", permanent=True) from None
    except OSError as exc:
        raise PayloadError(_unreadable(exc), permanent=False) from None


def _read(path: Path, defer: bool = False) -> Dataset:
    try:
        # Deferring large values keeps the encapsulated pixel data on disk until decoding.
        return dcmread(path, defer_size="1 MB" if defer else None)
    except InvalidDicomError:
        raise PayloadError(NOT_DICOM, permanent=True) from None
    except OSError as exc:
        raise PayloadError(_unreadable(exc), permanent=False) from None


def _unreadable(exc: OSError) -> str:
    return f"queued file cannot be read now: {exc.strerror or exc}; check the state disk"
