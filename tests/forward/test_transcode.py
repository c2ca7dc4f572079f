"""Big endian to little endian: what is swapped and by how much, against DCMTK's own dcmconv."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from gateway.forward.contexts import Route
from gateway.forward.payload import PayloadError, load_converted
from gateway.forward.transcode import TranscodeError, swap_unit, to_little_endian
from tests.peers import require_tool

PIXELS = np.arange(-300, 300, 9, dtype=np.int16)[:64].reshape(8, 8)
OVERLAY = bytes(range(1, 9))  # 8 rows x 8 columns of 1-bit overlay: 8 bytes, 4 words
LUT = np.array([0, 1000, 40000, 65535], dtype=np.uint16)


def _big_endian_mr(bits_allocated: int = 16) -> Dataset:
    """An MR image as a big-endian sender writes it, with OW, OF and UN values besides pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "MR", "BE-1"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, 12, 11
    ds.PixelRepresentation = 1
    ds.WindowCenter, ds.WindowWidth = [40.5, 400.25], [80.0, 1000.0]  # DS: text, not swapped
    ds.add_new(0x00189087, "FD", 1000.5)  # Diffusion b-value: a float the writer must swap
    ds.add_new(0x00209165, "AT", [0x00100010, 0x7FE00010])  # Dimension Index Pointer
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60003000, "OW", _be16(OVERLAY))
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.add_new(0x00283006, "OW", LUT.astype(">u2").tobytes())
    ds.ModalityLUTSequence = Sequence([lut])
    ds.add_new(0x00990010, "LO", "GATEWAY TEST")
    ds.add_new(0x00991001, "OF", np.array([1.5, -2.25], dtype=">f4").tobytes())
    ds.add_new(0x00991002, "UN", b"\x01\x02\x03\x04")  # structure unknown: left as it is
    ds.PixelData = PIXELS.astype(">i2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _be16(little: bytes) -> bytes:
    """OW words as a big-endian writer puts them (PS3.5 8.1.1: byte order per 16-bit word)."""
    return np.frombuffer(little, dtype="<u2").astype(">u2").tobytes()


def _write_big_endian(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True, little_endian=False, implicit_vr=False)
    return path


def _values(ds: Dataset) -> dict[int, object]:
    """Every element's value, bytes as they are, sequence items flattened; no group lengths."""
    return {int(e.tag): e.value for e in ds.iterall() if e.VR != "SQ" and e.tag.element != 0x0000}


@pytest.mark.peers
def test_big_endian_object_converts_to_what_dcmtk_makes_of_it(tmp_path: Path) -> None:
    source = _write_big_endian(_big_endian_mr(), tmp_path / "be.dcm")
    converted = dcmread(source)
    to_little_endian(converted)
    ours = tmp_path / "ours.dcm"
    converted.save_as(ours, enforce_file_format=True)

    reference = tmp_path / "dcmtk.dcm"
    subprocess.run([require_tool("dcmconv"), "+te", str(source), str(reference)], check=True)
    ours_ds, dcmtk_ds = dcmread(ours), dcmread(reference)
    assert ours_ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ours_ds.SOPInstanceUID == dcmread(source).SOPInstanceUID
    assert _values(ours_ds) == _values(dcmtk_ds)  # every element, raw bytes included
    assert np.array_equal(ours_ds.pixel_array, PIXELS)
    assert ours_ds[0x60003000].value == OVERLAY
    assert np.array_equal(np.frombuffer(ours_ds.ModalityLUTSequence[0].LUTData, "<u2"), LUT)
    assert np.array_equal(np.frombuffer(ours_ds[0x00991001].value, "<f4"), [1.5, -2.25])
    assert ours_ds[0x00991002].value == b"\x01\x02\x03\x04"
    assert ours_ds[0x00189087].value == 1000.5


@pytest.mark.parametrize("bits", [1, 32])
def test_pixel_data_whose_big_endian_order_toolkits_disagree_on_is_refused(
    bits: int, tmp_path: Path
) -> None:
    ds = dcmread(_write_big_endian(_big_endian_mr(bits_allocated=bits), tmp_path / "be.dcm"))
    with pytest.raises(TranscodeError, match=f"Pixel Data of {bits} bits allocated encoded as OW"):
        to_little_endian(ds)


@pytest.mark.parametrize(("vr", "bits"), [("OB", 16), ("OB", 12)])
def test_wide_pixel_data_encoded_as_bytes_is_refused_not_reordered(
    vr: str, bits: int, tmp_path: Path
) -> None:
    # OB is never swapped, but pydicom reads 16-bit cells of such big-endian Pixel Data as
    # big-endian numbers (DCMTK as bytes): sent unchanged as little endian, -300 becomes 1278.
    ds = _big_endian_mr(bits_allocated=16)
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds["PixelData"].VR = vr
    be = dcmread(_write_big_endian(ds, tmp_path / "be.dcm"))
    with pytest.raises(TranscodeError, match=f"Pixel Data of 16 bits allocated encoded as {vr}"):
        to_little_endian(be)


def test_swap_units() -> None:
    pixel, waveform, overlay = 0x7FE00010, 0x54001010, 0x60003000
    assert swap_unit(pixel, "OW", 16) == 2
    assert swap_unit(pixel, "OW", 8) == 2  # 8-bit samples in 16-bit words swap pairwise
    assert swap_unit(pixel, "OB", 8) == 1
    assert swap_unit(waveform, "OW", None) == 2
    assert swap_unit(overlay, "OW", None) == 2
    assert swap_unit(0x00991001, "OF", None) == 4
    assert swap_unit(0x00991001, "OD", None) == 8
    assert swap_unit(0x00991001, "OL", None) == 4
    assert swap_unit(0x00991001, "OV", None) == 8
    assert swap_unit(0x00991002, "UN", None) == 1
    with pytest.raises(TranscodeError):
        swap_unit(pixel, "OW", 32)
    with pytest.raises(TranscodeError, match="Waveform Data of 16 bits allocated encoded as OB"):
        swap_unit(waveform, "OB", 16)


def test_only_big_endian_is_converted(tmp_path: Path) -> None:
    ds = _big_endian_mr()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pytest.raises(TranscodeError, match="not Explicit VR Big Endian"):
        to_little_endian(ds)


def test_big_endian_conversion_keeps_the_in_memory_bound(tmp_path: Path) -> None:
    source = _write_big_endian(_big_endian_mr(), tmp_path / "be.dcm")
    limit = source.stat().st_size - 1
    with pytest.raises(PayloadError, match=f"too large to re-encode in memory \\(limit {limit}\\)"):
        load_converted(source, Route.TO_LITTLE_ENDIAN, max_bytes=limit)
    assert load_converted(source, Route.TO_LITTLE_ENDIAN).file_meta.TransferSyntaxUID == (
        ExplicitVRLittleEndian
    )
