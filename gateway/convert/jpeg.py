"""JPEG files as Secondary Capture objects, the bitstream encapsulated as it came.

The header is parsed here (markers up to the first scan) to learn the coding process, size,
precision, colour model and orientation; the pixels are never re-encoded, so the one Pixel Data
fragment holds the file's own bytes (plus a trailing 0x00 when the file has odd length, PS3.5
A.4).

Photometric Interpretation describes the stream as a JPEG decoder reads it (PS3.5 8.2.1: the
Image Pixel attributes "shall contain values that are consistent with the characteristics of
the compressed data stream"). The colour model is decided as libjpeg decides it, so the object
shows the colours the file shows on any PC:

* one component: MONOCHROME2;
* three components: YCbCr when a JFIF APP0 segment is present (JFIF implies YCbCr, whatever
  else the file says); else by the Adobe APP14 transform (0: RGB, otherwise YCbCr); else by the
  component identifiers ('R', 'G', 'B': RGB; anything else, usually 1, 2, 3: YCbCr);
* YCbCr is YBR_FULL when Cb and Cr are sampled as Y is (4:4:4), and YBR_FULL_422 when they are
  subsampled: 4:2:2, and also 4:2:0 and other layouts, as PS3.3 C.7.6.3.1.2 (YBR_FULL_422, note)
  says ("though inaccurate, the use of YBR_FULL_422 to describe both has proven harmless");
* RGB stays RGB; four components (CMYK, YCCK: Adobe) and two are refused, DICOM has no
  current Photometric Interpretation for them.

EXIF Orientation (tag 274) other than 1 means the stored pixels are not upright; a viewer of
the DICOM object would show them as stored. Such a file is not encapsulated: the converter
decodes it once, turns it upright and stores it uncompressed (gateway.convert.raster), which
loses nothing more than the JPEG already lost.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass, replace

from PIL import Image, JpegImagePlugin
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

from gateway.convert.result import ConversionError

_SOF_BASELINE = 0xC0
_SOF_EXTENDED = 0xC1
_SOF_OTHER = {
    0xC2: "progressive JPEG",
    0xC3: "lossless JPEG",
    0xC5: "hierarchical JPEG",
    0xC6: "hierarchical JPEG",
    0xC7: "hierarchical JPEG",
    0xC9: "arithmetic-coded JPEG",
    0xCA: "arithmetic-coded JPEG",
    0xCB: "arithmetic-coded JPEG",
    0xCD: "hierarchical arithmetic-coded JPEG",
    0xCE: "hierarchical arithmetic-coded JPEG",
    0xCF: "hierarchical arithmetic-coded JPEG",
}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
_SOS, _APP0, _APP1, _APP14 = 0xDA, 0xE0, 0xE1, 0xEE
_EXIF_ORIENTATION = 0x0112  # TIFF/EXIF tag 274
_RGB_IDS = b"RGB"  # component identifiers 82, 71, 66: libjpeg reads such a stream as RGB


@dataclass(frozen=True)
class FrameComponent:
    """One component of the frame header: identifier and sampling factors (H, V)."""

    identifier: int
    horizontal: int
    vertical: int


@dataclass(frozen=True)
class JpegMarkers:
    """What the segments before the first scan say about colour and orientation."""

    jfif: bool = False
    adobe_transform: int | None = None
    orientation: int = 1  # EXIF Orientation; 1 (upright) when absent or unreadable
    exif: bool = False  # an Exif APP1 was read: only the first counts, as for Pillow and libjpeg


@dataclass(frozen=True)
class JpegInfo:
    """What the JPEG header says about the image."""

    transfer_syntax_uid: str
    precision: int
    rows: int
    columns: int
    samples: int
    photometric: str
    orientation: int = 1  # EXIF Orientation: 1 is upright, 2-8 need turning (or mirroring)

    @property
    def upright(self) -> bool:
        """Whether the stored pixels are shown as the file means them (no EXIF turn)."""
        return self.orientation == 1


def parse_jpeg(data: bytes) -> JpegInfo:
    """Read the markers up to the first scan; ConversionError for what DICOM cannot carry."""
    if not data.startswith(b"\xff\xd8"):
        raise ConversionError("not a JPEG file (no start-of-image marker)")
    pos = 2
    sof: tuple[int, bytes] | None = None
    markers = JpegMarkers()
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise ConversionError("corrupt or truncated JPEG header")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 2 >= len(data):
            raise ConversionError("truncated JPEG header")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise ConversionError("corrupt or truncated JPEG header")
        payload = data[pos + 2 : pos + length]
        if marker == _SOS:
            break
        if sof is None and (marker in (_SOF_BASELINE, _SOF_EXTENDED) or marker in _SOF_OTHER):
            sof = (marker, payload)
        markers = _read_marker(markers, marker, payload)
        pos += length
    if sof is None:
        raise ConversionError("JPEG has no frame header before its first scan")
    if data.rfind(b"\xff\xd9") < pos:
        raise ConversionError("truncated JPEG (no end-of-image marker after the scan)")
    return _info(sof[0], sof[1], markers)


def _read_marker(markers: JpegMarkers, marker: int, payload: bytes) -> JpegMarkers:
    """``markers`` updated with what one APPn segment says (the first of each kind counts)."""
    if marker == _APP0 and payload.startswith(b"JFIF\x00"):
        return replace(markers, jfif=True)
    if (
        marker == _APP14
        and payload.startswith(b"Adobe")
        and len(payload) >= 12
        and markers.adobe_transform is None
    ):
        return replace(markers, adobe_transform=payload[11])
    if marker == _APP1 and payload.startswith(b"Exif\x00\x00") and not markers.exif:
        # A later Exif segment (an editor's) is not what viewers, or our decode path, turn by.
        return replace(markers, exif=True, orientation=_exif_orientation(payload))
    return markers


def _exif_orientation(payload: bytes) -> int:
    # Pillow parses the EXIF TIFF structure. An unreadable EXIF block or a value outside 1-8 is
    # ignored, as every viewer ignores it: the image is then shown as stored, and so is ours.
    try:
        exif = Image.Exif()
        exif.load(payload)
        value = int(exif.get(_EXIF_ORIENTATION, 1))
    except (OSError, ValueError, TypeError, KeyError, IndexError, SyntaxError, struct.error):
        return 1
    return value if 1 <= value <= 8 else 1


def colour_photometric(components: list[FrameComponent], markers: JpegMarkers) -> str:
    """Photometric Interpretation of a frame's components, by the rules in the module doc."""
    if len(components) == 1:
        return "MONOCHROME2"
    if len(components) == 4:
        model = "YCCK" if markers.adobe_transform == 2 else "CMYK"
        raise ConversionError(
            f"{model} JPEG is not supported (DICOM has no current photometric interpretation "
            "for it); save it as RGB"
        )
    if len(components) != 3:
        raise ConversionError(f"JPEG with {len(components)} components is not supported")
    if markers.jfif:
        rgb = False
    elif markers.adobe_transform is not None:
        rgb = markers.adobe_transform == 0
    else:
        rgb = bytes(c.identifier for c in components) == _RGB_IDS
    if rgb:
        return "RGB"
    sampling = {(c.horizontal, c.vertical) for c in components}
    return "YBR_FULL" if len(sampling) == 1 else "YBR_FULL_422"


def _info(marker: int, payload: bytes, markers: JpegMarkers) -> JpegInfo:
    if marker in _SOF_OTHER:
        raise ConversionError(
            f"{_SOF_OTHER[marker]} is not supported (only baseline and extended sequential)"
        )
    if len(payload) < 6:
        raise ConversionError("corrupt JPEG frame header")
    precision = payload[0]
    rows = int.from_bytes(payload[1:3], "big")
    columns = int.from_bytes(payload[3:5], "big")
    samples = payload[5]
    if len(payload) < 6 + 3 * samples:
        raise ConversionError("corrupt JPEG frame header")
    if rows == 0 or columns == 0:
        raise ConversionError("JPEG without height in its frame header (DNL) is not supported")
    if precision not in (8, 12) or (marker == _SOF_BASELINE and precision != 8):
        raise ConversionError(f"JPEG sample precision {precision} is not supported")
    components = [
        FrameComponent(payload[6 + 3 * i], payload[7 + 3 * i] >> 4, payload[7 + 3 * i] & 0x0F)
        for i in range(samples)
    ]
    photometric = colour_photometric(components, markers)
    return JpegInfo(
        transfer_syntax_uid=JPEGBaseline8Bit if marker == _SOF_BASELINE else JPEGExtended12Bit,
        precision=precision,
        rows=rows,
        columns=columns,
        samples=samples,
        photometric=photometric,
        orientation=markers.orientation,
    )


def check_decodes(data: bytes, info: JpegInfo, max_pixels: int) -> None:
    """Decode once, scaled down, to prove the entropy-coded data is whole; result discarded.

    libjpeg's DCT scaling still walks every coded block, at 1/64 of the memory.
    """
    if info.rows * info.columns > max_pixels:
        raise ConversionError(
            f"image of {info.columns}×{info.rows} pixels exceeds the limit of {max_pixels}"
        )
    if info.precision != 8:
        return  # Pillow does not decode 12-bit JPEG; the header checks above must do.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
            image.draft(image.mode, (max(1, info.columns // 8), max(1, info.rows // 8)))
            image.load()
    # Any failure of the decoder on untrusted bytes means the file is unreadable.
    except Exception as exc:
        raise ConversionError(f"JPEG does not decode: {exc}") from exc


def add_jpeg_image(ds: Dataset, data: bytes, info: JpegInfo) -> None:
    """Image Pixel and lossy-compression attributes, and the JPEG as the one fragment."""
    ds.SamplesPerPixel = info.samples
    ds.PhotometricInterpretation = info.photometric
    if info.samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = info.rows
    ds.Columns = info.columns
    allocated = 8 if info.precision == 8 else 16
    ds.BitsAllocated = allocated
    ds.BitsStored = info.precision
    ds.HighBit = info.precision - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    uncompressed = info.rows * info.columns * info.samples * allocated // 8
    ds.LossyImageCompressionRatio = f"{uncompressed / len(data):.2f}"[:16]
    # encapsulate() pads an odd-length fragment with one trailing 0x00, as PS3.5 A.4 requires.
    ds.PixelData = encapsulate([data])
    ds["PixelData"].VR = "OB"
