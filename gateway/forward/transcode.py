"""Changing a loaded object's transfer syntax for a PACS that refuses its own.

Two conversions, each keeping the SOP Instance UID (a change of transfer syntax is the same
instance, PS3.5 10.1; a resend after a crash is then the same object to the PACS):

* **Explicit VR Big Endian to Explicit VR Little Endian** (:func:`to_little_endian`). pydicom
  re-encodes the values it decodes (US, SS, UL, SL, FL, FD, AT, ...) in the new byte order by
  itself, but writes OW, OF, OL, OD and OV values as the bytes it read (``dcmwrite``'s warning),
  so this module swaps them:

  ========================================  ==========================================
  element                                   swapped in units of
  ========================================  ==========================================
  Pixel Data (7FE0,0010), OW                the 16-bit word (PS3.5 8.1.1), when Bits
                                            Allocated is 8 or 16; refused otherwise
  Pixel Data, OB                            not swapped, when Bits Allocated is 1 or 8;
                                            refused otherwise (see below)
  Waveform Data (5400,1010), OW             likewise by Waveform Bits Allocated
  any other OW (overlays, LUT data, ...)    2 bytes
  OF, OL / OD, OV                           4 / 8 bytes
  OB, UN                                    not swapped (bytes; a UN value's structure is
                                            unknown, and DCMTK leaves it alone too)
  ========================================  ==========================================

  Why 32-bit (and 1-, 64-bit) OW pixel data is refused: DICOM toolkits disagree on it. PS3.5
  8.1.1 and DCMTK (dcmconv 3.6.7) take OW as 16-bit words, a 32-bit cell as two of them;
  pydicom reads a 32-bit cell as one big-endian number. pydicom's own ``rtdose_expb.dcm``
  matches ``rtdose.dcm`` only pydicom's way, DCMTK turns its first dose value 1249000 into
  250085395. A dose grid must not come out of the gateway one way or the other by chance, so
  such an object is refused with that reason; a PACS that accepts big endian gets it as it is.
  Pixel Data wider than 8 bits in OB (PS3.5 A.2 wants OW there) is refused for the same reason:
  pydicom reads its cells as big-endian numbers, DCMTK keeps its bytes, and unswapped its
  values would change (-300 becomes 1278).

* **Compressed to Explicit VR Little Endian** (:func:`decode_pixel_data`), with pydicom's
  decoders, colour converted to RGB.

Trap of pydicom 3.0.2 this module works around (reproduced with pydicom's own corpus by
tests/forward/test_sender_fallback.py):

* ``Dataset.decompress()`` without frame indices takes a path in ``Decoder.iter_array`` that
  wraps each decoded frame in a read-only array and then corrects JPEG 2000 / JPEG-LS
  signedness in place on it, failing with "output array is read-only" on data that
  ``pixel_array`` decodes (``J2K_pixelrep_mismatch.dcm``). Passing the frame indices takes the
  path ``pixel_array`` uses (a writeable array per frame).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

_PIXEL_DATA = 0x7FE00010
_WAVEFORM_DATA = 0x54001010
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_UNIT_BY_VR = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# Bits Allocated whose OW encoding every toolkit reads the same: swapped as 16-bit words.
_AGREED_BITS = frozenset({8, 16})
# Bits Allocated whose OB encoding is only bytes (1-bit cells are packed bytes): left as it is.
_AGREED_BYTE_BITS = frozenset({1, 8})


class TranscodeError(Exception):
    """The object cannot be converted; the message says why, in words for the operator."""


def swap_unit(tag: int, vr: str, bits_allocated: int | None) -> int:
    """Bytes per value unit to reverse when ``tag`` (of ``vr``) goes from big to little endian.

    1 means the value is left as it is. ``bits_allocated`` is the data set's Bits Allocated
    for Pixel Data, its Waveform Bits Allocated for Waveform Data (None when absent).
    """
    unit = _UNIT_BY_VR.get(vr, 1)
    if vr not in ("OW", "OB") or tag not in (_PIXEL_DATA, _WAVEFORM_DATA):
        return unit
    if tag == _WAVEFORM_DATA and bits_allocated is None:
        return unit
    # OB samples wider than a byte break PS3.5 A.2 (OW is required above 8 bits): pydicom reads
    # them as big-endian cells, DCMTK as bytes to keep; left unswapped their values would change.
    agreed = _AGREED_BITS if vr == "OW" else _AGREED_BYTE_BITS
    if bits_allocated not in agreed:
        what = "Pixel Data" if tag == _PIXEL_DATA else "Waveform Data"
        readings = "16-bit words or as whole cells" if vr == "OW" else "whole cells or as bytes"
        raise TranscodeError(
            f"{what} of {bits_allocated} bits allocated encoded as {vr} is read differently by "
            f"DICOM toolkits in big endian (as {readings}), so the gateway does not guess its "
            "values"
        )
    return unit


def swapped(value: bytes, unit: int) -> np.ndarray:
    """``value`` with every ``unit``-byte group reversed (a new array; ``value`` is untouched)."""
    if len(value) % unit:
        raise TranscodeError(
            f"a value of {len(value)} bytes is not a whole number of {unit}-byte units"
        )
    return np.frombuffer(value, dtype=f"u{unit}").byteswap()


def to_little_endian(ds: Dataset) -> None:
    """Convert ``ds``, read from Explicit VR Big Endian, to Explicit VR Little Endian in place."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax != ExplicitVRBigEndian:
        raise TranscodeError(f"the object is not Explicit VR Big Endian ({_name(syntax)})")
    try:
        _swap_dataset(ds)
    except TranscodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a corrupt value
        raise TranscodeError(f"a value cannot be read: {one_line(str(exc))}") from None
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _swap_dataset(ds: Dataset) -> None:
    # Iterating decodes each raw element with the data set's own (big endian) byte order.
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_dataset(item)
        elif (elem.VR in _UNIT_BY_VR or elem.VR == "OB") and elem.value:
            bits = ds.get(
                "WaveformBitsAllocated" if elem.tag == _WAVEFORM_DATA else "BitsAllocated"
            )
            unit = swap_unit(elem.tag, elem.VR, None if bits is None else int(bits))
            if unit > 1:
                _replace_value(elem, swapped(elem.value, unit))
    # From now on pydicom and pynetdicom take every element as already little endian.
    ds.set_original_encoding(False, True)


def _replace_value(elem: DataElement, cells: np.ndarray) -> None:
    # The big-endian bytes go before the new bytes are made: two copies at most, not three.
    elem.value = b""
    elem.value = cells.tobytes()


def decode_pixel_data(ds: Dataset) -> None:
    """Decode ``ds``'s compressed pixel data to Explicit VR Little Endian in place.

    A data set without pixel data (a compressed syntax is allowed on any object) has nothing
    to decode: it is only relabelled, since everything else in it is already little endian.
    """
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        # indices: the path pixel_array takes (see the module docstring for the trap).
        ds.decompress(generate_instance_uid=False, as_rgb=True, indices=range(frames))
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise anything on corrupt data
        raise TranscodeError(one_line(str(exc)) or type(exc).__name__) from None


def one_line(text: str, limit: int = 400) -> str:
    """A library's (often multi-line) message as one line of at most ``limit`` characters."""
    words = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return words if len(words) <= limit else words[: limit - 3] + "..."


def _name(syntax: object) -> str:
    return UID(str(syntax)).name if syntax else "no transfer syntax"
