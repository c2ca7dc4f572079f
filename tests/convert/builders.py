"""Inputs built at test time: images, PDFs, DICOM files and hand-made hostile byte streams."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from tests.peers import dciodvfy

# dciodvfy warnings that no value can avoid, each with why:
UNAVOIDABLE_WARNINGS = (
    # Laterality (0020,0060) is type 2C for a paired body part; the gateway cannot know the
    # body part, so it sends it empty ("unknown"). Leaving it out makes dciodvfy report an Error.
    "attribute <Laterality>",
)

STUDY_UID = "1.2.826.0.1.3680043.10.999.1"
SERIES_UID = "1.2.826.0.1.3680043.10.999.2"
SOP_UID = "1.2.826.0.1.3680043.10.999.3"


# Only for objects held for want of an identity: Patient ID is empty because it is unknown,
# and no value may be invented for it.
NO_PATIENT_ID_WARNING = "needed to build DICOMDIR - Patient ID"


# dciodvfy (dicom3tools 2022) checks Photometric Interpretation of JPEG Baseline against the
# list of PS3.5 Table 8.2.1-1 (YBR_FULL_422 or RGB for three samples) and reports YBR_FULL as an
# error, even for a 4:4:4 stream, where YBR_FULL is the value consistent with the stream (PS3.5
# 8.2.1) and the one DCMTK's own encoder writes (pydicom's SC_rgb_dcmtk_+eb+cy+s4.dcm gets the
# same error: test_jpeg.py::test_dciodvfy_reports_ybr_full_for_dcmtk_too).
YBR_FULL_JPEG_ERROR = "Unrecognized enumerated value <YBR_FULL> for value 1 of attribute"


def assert_valid_dicom(
    path: Path, also_unavoidable: tuple[str, ...] = (), allowed_errors: tuple[str, ...] = ()
) -> None:
    """dciodvfy finds no error and no warning beyond the documented unavoidable ones."""
    errors, warnings = dciodvfy(path)
    errors = [e for e in errors if not any(ok in e for ok in allowed_errors)]
    assert errors == [], errors
    allowed = UNAVOIDABLE_WARNINGS + also_unavoidable
    avoidable = [w for w in warnings if not any(ok in w for ok in allowed)]
    assert avoidable == [], avoidable


def machine_file(path: str, tmp_path: Path) -> Path:
    """The Debian machine's file ``path`` copied into ``tmp_path``; skips where it is missing."""
    if not Path(path).is_file():
        pytest.skip(f"{path} is not on this machine")
    source = tmp_path / Path(path).name
    source.write_bytes(Path(path).read_bytes())
    return source


def noise(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    high = np.iinfo(dtype).max
    return rng.integers(0, high, size=shape, dtype=dtype, endpoint=True)


def gradient_rgb(rows: int = 60, columns: int = 80) -> Image.Image:
    """A smooth image (JPEG compresses it well and decodes close to it)."""
    y, x = np.mgrid[0:rows, 0:columns]
    array = np.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(array)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def handmade_png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    """A PNG from raw parts; lets a test claim any size or depth without the pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def handmade_tiff(values: np.ndarray, photometric: int, extra: int) -> bytes:
    """An uncompressed little-endian one-strip TIFF of ``values`` (rows, columns, samples) whose
    last sample is an extra sample of kind ``extra`` (ExtraSamples: 1 associated alpha, 2
    unassociated alpha); Pillow cannot write associated alpha itself."""
    rows, columns, samples = values.shape
    bits = values.dtype.itemsize * 8
    pixels = values.astype(f"<u{values.dtype.itemsize}").tobytes()
    bits_offset = 8 + 2 + 12 * 11 + 4  # after the IFD: BitsPerSample values, then the strip
    bits_values = struct.pack(f"<{samples}H", *([bits] * samples))
    strip_offset = bits_offset + len(bits_values)

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        return struct.pack("<HHI", tag, kind, count) + packed

    entries = [
        entry(256, 3, 1, columns),  # ImageWidth
        entry(257, 3, 1, rows),  # ImageLength
        b"",  # BitsPerSample, below
        entry(259, 3, 1, 1),  # Compression: none
        entry(262, 3, 1, photometric),  # 1 BlackIsZero, 2 RGB
        entry(273, 4, 1, strip_offset),  # StripOffsets
        entry(277, 3, 1, samples),  # SamplesPerPixel
        entry(278, 3, 1, rows),  # RowsPerStrip
        entry(279, 4, 1, len(pixels)),  # StripByteCounts
        entry(284, 3, 1, 1),  # PlanarConfiguration: chunky
        entry(338, 3, 1, extra),  # ExtraSamples
    ]
    # BitsPerSample: up to two values fit in the entry, more are stored after the IFD.
    if samples <= 2:
        entries[2] = struct.pack("<HHI", 258, 3, samples) + bits_values.ljust(4, b"\x00")
    else:
        entries[2] = struct.pack("<HHII", 258, 3, samples, bits_offset)
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bits_values + pixels


def minimal_pdf(text_pages: int = 1) -> bytes:
    """A small valid PDF written by hand, with a correct xref table."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + i} 0 R" for i in range(text_pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {text_pages} >>".encode())
    for _ in range(text_pages):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def sc_dataset(pixels: bool = True) -> Dataset:
    """A small valid Secondary Capture dataset (without file meta)."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyDate = "20250101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "Roe^Richard"
    ds.PatientID = "P9"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.Laterality = ""
    if pixels:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 64
        ds.Columns = 64
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = noise((64, 64)).tobytes()
    return ds


def write_part10(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta = meta
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element."""
    tag = struct.pack("<HH", group, elem)
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def nested_sequences(depth: int) -> bytes:
    """(0040,A730) Content Sequence nested ``depth`` levels, undefined lengths throughout."""
    opening = (
        struct.pack("<HH", 0x0040, 0xA730)
        + b"SQ\x00\x00"
        + b"\xff\xff\xff\xff"
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


def gray_image(rows: int = 40, columns: int = 30, seed: int = 1) -> Image.Image:
    return Image.fromarray(noise((rows, columns), seed=seed))


def file_meta_bytes(syntax: str, sop_class: str, sop_instance: str) -> bytes:
    """Preamble, DICM and a File Meta group written by hand."""

    def ui(value: str) -> bytes:
        raw = value.encode()
        return raw + b"\x00" if len(raw) % 2 else raw

    body = (
        element(0x0002, 0x0001, b"OB", b"\x00\x01")
        + element(0x0002, 0x0002, b"UI", ui(sop_class))
        + element(0x0002, 0x0003, b"UI", ui(sop_instance))
        + element(0x0002, 0x0010, b"UI", ui(syntax))
    )
    length = element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + length + body
