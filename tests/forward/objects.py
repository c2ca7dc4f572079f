"""Test objects built with pydicom at test time, and queue entries that point at them."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from gateway.convert.dicomcheck import check_part10
from gateway.convert.result import ConversionError
from gateway.spool.entries import SpoolEntry


def _base(sop_class: str, syntax: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST-0001"
    ds.StudyDate = "20240101"
    return ds


def write_ct(path: Path, rows: int = 64, cols: int = 64, frames: int = 1) -> Path:
    """An uncompressed 16-bit CT image (Explicit VR Little Endian)."""
    ds = _base(CTImageStorage, ExplicitVRLittleEndian)
    ds.Modality = "CT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = (
        (np.arange(rows * cols * frames, dtype=np.uint32) % 4096).astype(np.uint16).tobytes()
    )
    ds.save_as(path, enforce_file_format=True)
    return path


def _sc_colour(ds: Dataset, rows: int, cols: int) -> None:
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0


def write_jpeg_sc(path: Path, rows: int = 48, cols: int = 64) -> Path:
    """A JPEG Baseline encapsulated secondary capture, encoded with Pillow."""
    ds = _base(SecondaryCaptureImageStorage, JPEGBaseline8Bit)
    _sc_colour(ds, rows, cols)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    pixels = np.zeros((rows, cols, 3), np.uint8)
    pixels[..., 0] = (np.arange(cols) * 4 % 256).astype(np.uint8)[None, :]
    pixels[..., 1] = (np.arange(rows) * 5 % 256).astype(np.uint8)[:, None]
    pixels[..., 2] = 90
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_undecodable(path: Path) -> Path:
    """A JPEG 2000 secondary capture whose codestream no installed decoder can read."""
    ds = _base(SecondaryCaptureImageStorage, JPEG2000Lossless)
    _sc_colour(ds, 16, 16)
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def corpus_file(name: str) -> Path:
    """One file of pydicom's test corpus as installed (never downloaded)."""
    path = Path(DATA_ROOT) / "test_files" / name
    assert path.is_file(), path
    return path


def corpus_objects(wanted: Callable[[UID], bool]) -> list[Path]:
    """pydicom's own test files (none written by us) in a wanted syntax that could be queued.

    Queueable means the gateway's own ingest check of a forwarded DICOM file passes, so the
    corpus's deliberately broken files, DICOMDIRs and non-DICOM files are left out.
    """
    found = []
    # The corpus as installed: get_testdata_files() would also try to download pydicom-data.
    for path in sorted(p for p in (Path(DATA_ROOT) / "test_files").rglob("*") if p.is_file()):
        try:
            facts = check_part10(path)
        except (ConversionError, OSError):
            continue
        if wanted(UID(facts.transfer_syntax_uid)):
            found.append(path)
    return found


def entry_for(path: Path, delivery_id: int = 1, destination: str = "pacs") -> SpoolEntry:
    """A claimed delivery of the object file at ``path``."""
    meta = read_file_meta_info(path)
    return SpoolEntry(
        delivery_id=delivery_id,
        object_id=delivery_id,
        destination=destination,
        path=path,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        size=path.stat().st_size,
        attempts=0,
    )
