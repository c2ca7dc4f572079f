"""rewrite_part10: the header changes, the instance and its bulk data do not; originals recorded."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    EncapsulatedPDFStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway import product
from gateway.convert.coerce import (
    BULK_THRESHOLD,
    REASON_COERCE,
    REASON_CORRECT,
    CoerceError,
    rewrite_part10,
)
from gateway.convert.dicomcheck import check_part10
from tests.convert.builders import sc_dataset, write_part10

MODIFIED_AT = 1_700_000_000.25  # 2023-11-14 22:13:20.25 UTC


def _rename(ds: Dataset) -> None:
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "NEW-1"
    ds.AccessionNumber = "ACC9"


def _value_bytes(path: Path, tag: int) -> bytes:
    """The encoded value of a top-level element, read with pydicom as raw bytes."""
    ds = pydicom.dcmread(path)
    return bytes(ds[tag].value)


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_values_are_replaced_and_the_old_ones_recorded(tmp_path: Path, syntax: str) -> None:
    src = write_part10(sc_dataset(), tmp_path / "src.dcm", syntax)
    dst = tmp_path / "dst.dcm"

    facts = rewrite_part10(
        src, dst, _rename, reason=REASON_CORRECT, keep_original=True, modified_at=MODIFIED_AT
    )

    old, new = pydicom.dcmread(src), pydicom.dcmread(dst)
    assert (str(new.PatientName), new.PatientID, new.AccessionNumber) == (
        "Doe^Jane",
        "NEW-1",
        "ACC9",
    )
    assert new.SOPInstanceUID == old.SOPInstanceUID == facts.sop_instance_uid
    assert new.file_meta.MediaStorageSOPInstanceUID == old.SOPInstanceUID
    assert facts.transfer_syntax_uid == syntax == new.file_meta.TransferSyntaxUID
    # We wrote the new file: it names the product (PS3.10 7.1), not the source's writer.
    assert new.file_meta.ImplementationClassUID == product.IMPLEMENTATION_CLASS_UID
    assert new.file_meta.ImplementationVersionName == product.IMPLEMENTATION_VERSION_NAME
    assert facts.study_instance_uid == old.StudyInstanceUID
    assert facts.size == dst.stat().st_size
    assert new.PixelData == old.PixelData
    (history,) = new.OriginalAttributesSequence
    (modified,) = history.ModifiedAttributesSequence
    assert (str(modified.PatientName), modified.PatientID, modified.AccessionNumber) == (
        "Roe^Richard",
        "P9",
        "",
    )
    assert "StudyInstanceUID" not in modified  # unchanged values are not recorded
    assert history.ReasonForTheAttributeModification == "CORRECT"
    assert history.ModifyingSystem == "EDGEGW"
    assert history.AttributeModificationDateTime == "20231114221320.250000+0000"
    assert history.SourceOfPreviousValues == ""
    check_part10(dst)  # still passes our own structural checks


def test_pixel_data_is_byte_identical_and_never_loaded(tmp_path: Path) -> None:
    ds = sc_dataset(pixels=False)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 4000, 4000
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    src = write_part10(ds, tmp_path / "big.dcm")
    size = 4000 * 4000 * 2
    chunk = bytes(range(256)) * 4096  # 1 MiB; the test process never holds the whole image
    with src.open("ab") as fh:  # Pixel Data is the last element: append it, OW, 32 MB
        fh.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size))
        for _ in range(size // len(chunk)):
            fh.write(chunk)
        fh.write(chunk[: size % len(chunk)])

    tracemalloc.start()
    try:
        rewrite_part10(
            src, tmp_path / "dst.dcm", _rename, reason=REASON_CORRECT, keep_original=True
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * 1024 * 1024  # the 32 MB of pixels went through in 1 MiB chunks
    with src.open("rb") as a, (tmp_path / "dst.dcm").open("rb") as b:
        a.seek(-size, 2)
        b.seek(-size, 2)
        while block := a.read(1 << 20):
            assert b.read(1 << 20) == block


def test_large_values_before_the_pixels_are_spliced_in_unchanged(tmp_path: Path) -> None:
    # An Encapsulated PDF: the document (0042,0011) sits between the patient module and
    # attributes the change adds after it (Request Attributes, Original Attributes).
    ds = sc_dataset(pixels=False)
    ds.SOPClassUID = EncapsulatedPDFStorage
    document = b"%PDF-1.4\n" + bytes(range(256)) * 4000 + b"\n%%EOF\n"
    ds.EncapsulatedDocument = document
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.add_new(0x00091010, "LO", "ACME")  # private creator
    ds.add_new(0x00091011, "OB", b"\x01" * (BULK_THRESHOLD + 10))  # private blob, deferred too
    src = write_part10(ds, tmp_path / "pdf.dcm")

    def bind(target: Dataset) -> None:
        _rename(target)
        request = Dataset()
        request.RequestedProcedureID = "RP1"
        request.ScheduledProcedureStepID = "SPS1"
        target.RequestAttributesSequence = [request]

    rewrite_part10(src, tmp_path / "dst.dcm", bind, reason=REASON_COERCE, keep_original=True)

    new = pydicom.dcmread(tmp_path / "dst.dcm")
    assert new.EncapsulatedDocument == document
    assert new.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert new[0x00091011].value == b"\x01" * (BULK_THRESHOLD + 10)
    assert new.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS1"
    assert new.OriginalAttributesSequence[0].ReasonForTheAttributeModification == "COERCE"
    assert new.PatientID == "NEW-1"


def test_character_set_follows_the_new_values_and_old_text_is_re_encoded(tmp_path: Path) -> None:
    ds = sc_dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jörg"
    src = write_part10(ds, tmp_path / "latin1.dcm")

    def japanese(target: Dataset) -> None:
        target.PatientName = "山田^太郎"

    rewrite_part10(src, tmp_path / "utf8.dcm", japanese, reason=REASON_CORRECT, keep_original=True)
    new = pydicom.dcmread(tmp_path / "utf8.dcm")
    assert new.SpecificCharacterSet == "ISO_IR 192"
    assert str(new.PatientName) == "山田^太郎"
    assert str(new.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].PatientName) == (
        "Müller^Jörg"
    )

    rewrite_part10(src, tmp_path / "ascii.dcm", _rename, reason=REASON_CORRECT, keep_original=False)
    plain = pydicom.dcmread(tmp_path / "ascii.dcm")
    assert "SpecificCharacterSet" not in plain  # nothing non-ASCII is left
    assert "OriginalAttributesSequence" not in plain


def test_a_second_change_appends_to_the_history(tmp_path: Path) -> None:
    src = write_part10(sc_dataset(), tmp_path / "src.dcm")
    rewrite_part10(src, tmp_path / "one.dcm", _rename, reason=REASON_COERCE, keep_original=True)

    def again(ds: Dataset) -> None:
        ds.PatientID = "NEW-2"

    rewrite_part10(
        tmp_path / "one.dcm", tmp_path / "two.dcm", again, reason=REASON_CORRECT, keep_original=True
    )
    history = pydicom.dcmread(tmp_path / "two.dcm").OriginalAttributesSequence
    assert [h.ReasonForTheAttributeModification for h in history] == ["COERCE", "CORRECT"]
    assert history[1].ModifiedAttributesSequence[0].PatientID == "NEW-1"
    assert "OriginalAttributesSequence" not in history[1].ModifiedAttributesSequence[0]


def test_a_change_of_the_sop_instance_uid_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    src = write_part10(sc_dataset(), tmp_path / "src.dcm")

    def renumber(ds: Dataset) -> None:
        ds.SOPInstanceUID = "2.25.42"

    with pytest.raises(CoerceError, match="SOP"):
        rewrite_part10(
            src, tmp_path / "dst.dcm", renumber, reason=REASON_CORRECT, keep_original=True
        )
    assert not (tmp_path / "dst.dcm").exists()


def test_an_unknown_reason_is_refused(tmp_path: Path) -> None:
    src = write_part10(sc_dataset(), tmp_path / "src.dcm")
    with pytest.raises(ValueError, match="reason"):
        rewrite_part10(src, tmp_path / "dst.dcm", _rename, reason="FIX", keep_original=True)


def test_no_change_adds_no_history(tmp_path: Path) -> None:
    src = write_part10(sc_dataset(), tmp_path / "src.dcm")
    rewrite_part10(src, tmp_path / "dst.dcm", lambda ds: None, reason="CORRECT", keep_original=True)
    assert "OriginalAttributesSequence" not in pydicom.dcmread(tmp_path / "dst.dcm")
