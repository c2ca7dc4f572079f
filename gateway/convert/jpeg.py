"""JPEG files as Secondary Capture objects, the bitstream encapsulated as it came.

The header is parsed here (markers up to the first scan) to learn the coding process, size,
precision and colour model; the pixels are never re-encoded, so the one Pixel Data fragment
holds the file's own bytes (plus a trailing 0x00 when the file has odd length, PS3.5 A.4).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import JpegImagePlugin
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
_SOS, _APP14 = 0xDA, 0xEE


@dataclass(frozen=True)
class JpegInfo:
    """What the JPEG header says about the image."""

    transfer_syntax_uid: str
    precision: int
    rows: int
    columns: int
    samples: int
    photometric: str


def parse_jpeg(data: bytes) -> JpegInfo:
    """Read the markers up to the first scan; ConversionError for what DICOM cannot carry."""
    if not data.startswith(b"\xff\xd8"):
        raise ConversionError("not a JPEG file (no start-of-image marker)")
    pos = 2
    sof: tuple[int, bytes] | None = None
    adobe_transform: int | None = None
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
        if marker == _APP14 and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe_transform = payload[11]
        pos += length
    if sof is None:
        raise ConversionError("JPEG has no frame header before its first scan")
    if data.rfind(b"\xff\xd9") < pos:
        raise ConversionError("truncated JPEG (no end-of-image marker after the scan)")
    return _info(sof[0], sof[1], adobe_transform)


def _info(marker: int, payload: bytes, adobe_transform: int | None) -> JpegInfo:
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
    components = [payload[6 + 3 * i : 9 + 3 * i] for i in range(samples)]
    if samples == 1:
        photometric = "MONOCHROME2"
    elif samples == 3:
        ids = bytes(c[0] for c in components)
        # YCbCr is YBR_FULL_422 whatever the chroma sampling, as DICOM's JPEG rules expect
        # (dciodvfy refuses YBR_FULL); the decoder reads the sampling from the stream.
        photometric = "RGB" if adobe_transform == 0 or ids == b"RGB" else "YBR_FULL_422"
    else:
        raise ConversionError(f"JPEG with {samples} components is not supported")
    return JpegInfo(
        transfer_syntax_uid=JPEGBaseline8Bit if marker == _SOF_BASELINE else JPEGExtended12Bit,
        precision=precision,
        rows=rows,
        columns=columns,
        samples=samples,
        photometric=photometric,
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
