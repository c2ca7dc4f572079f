"""Objects bound to a worklist step: what they carry, their UIDs, and dciodvfy on each kind."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.convert.converter import Converter
from gateway.worklist.binding import Binding, item_identity
from gateway.worklist.item import WorklistItem
from tests.convert.builders import assert_valid_dicom, gradient_rgb, minimal_pdf
from tests.convert.conftest import MTIME, ItemFactory
from tests.worklist.factory import make_item as make_step

# A code from the RIS's own coding scheme ("99" prefix: a local scheme, PS3.16 8.2): dciodvfy
# knows only the standard's designators, and the gateway must copy the RIS's code as it is.
LOCAL_SCHEME_WARNING = "Unrecognized defined term <99RIS>"


def _code() -> Dataset:
    code = Dataset()
    code.CodeValue = "US-ABD"
    code.CodingSchemeDesignator = "99RIS"
    code.CodeMeaning = "US Abdomen"
    return code


STEP = make_step(
    patient_id="P-JÖRG",
    patient_name="Müller^Jörg",
    accession_number="ACC1",
    study_instance_uid="1.2.826.0.1.3680043.10.999.77",
    requested_procedure_id="RP1",
    step_id="SPS1",
    birth_date="19700202",
    sex="M",
    RequestedProcedureCodeSequence=Sequence([_code()]),
)
OTHER_STEP = make_step(
    patient_id="P-ANNA",
    patient_name="Berg^Anna",
    accession_number="ACC2",
    study_instance_uid="1.2.826.0.1.3680043.10.999.78",
    step_id="SPS2",
)


def bound(step: WorklistItem) -> Binding:
    return Binding(step, item_identity(step), None, "selection")


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    gradient_rgb().save(path, format="JPEG", quality=90)
    return path


@pytest.fixture
def tiff_pages(tmp_path: Path) -> Path:
    path = tmp_path / "loop.tiff"
    first = gradient_rgb()
    first.save(path, save_all=True, append_images=[gradient_rgb().rotate(180)])
    return path


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    path = tmp_path / "report.pdf"
    path.write_bytes(minimal_pdf())
    return path


@pytest.mark.parametrize(
    ("source", "sop_class"),
    [
        ("jpeg", "1.2.840.10008.5.1.4.1.1.7"),
        ("tiff_pages", "1.2.840.10008.5.1.4.1.1.7.4"),
        ("pdf", "1.2.840.10008.5.1.4.1.1.104.1"),
    ],
)
def test_bound_object_carries_the_step_and_passes_dciodvfy(
    request: pytest.FixtureRequest,
    source: str,
    sop_class: str,
    out_dir: Path,
    converter: Converter,
    make_item: ItemFactory,
) -> None:
    path: Path = request.getfixturevalue(source)
    out = out_dir / "out.dcm"
    result = converter.convert(make_item(path, binding=bound(STEP)), out)
    assert (result.sop_class_uid, result.held_reason) == (sop_class, None)
    assert result.study_instance_uid == STEP.study_instance_uid
    ds = pydicom.dcmread(out)
    assert (str(ds.PatientName), ds.PatientID) == ("Müller^Jörg", "P-JÖRG")
    assert (ds.PatientBirthDate, ds.PatientSex) == ("19700202", "M")
    assert ds.StudyInstanceUID == STEP.study_instance_uid
    assert ds.AccessionNumber == "ACC1"
    assert str(ds.ReferringPhysicianName) == "Ref^Doctor"
    assert ds.StudyID == "RP1"
    assert ds.ProcedureCodeSequence[0].CodeValue == "US-ABD"
    request_item = ds.RequestAttributesSequence[0]
    assert (request_item.RequestedProcedureID, request_item.ScheduledProcedureStepID) == (
        "RP1",
        "SPS1",
    )
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    # Request Attributes Sequence is allowed in the Encapsulated PDF IOD too (dciodvfy says
    # nothing about it; an attribute outside the IOD is reported as a warning).
    assert_valid_dicom(out, also_unavoidable=(LOCAL_SCHEME_WARNING,))


def test_same_drop_bound_again_is_the_same_instance(
    jpeg: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    first = converter.convert(make_item(jpeg, binding=bound(STEP)), out_dir / "1.dcm")
    again = converter.convert(make_item(jpeg, binding=bound(STEP)), out_dir / "2.dcm")
    assert first.sop_instance_uid == again.sop_instance_uid
    assert (out_dir / "1.dcm").read_bytes() == (out_dir / "2.dcm").read_bytes()


def test_same_drop_bound_to_another_step_is_another_instance(
    jpeg: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    first = converter.convert(make_item(jpeg, binding=bound(STEP)), out_dir / "1.dcm")
    other = converter.convert(make_item(jpeg, binding=bound(OTHER_STEP)), out_dir / "2.dcm")
    unbound = converter.convert(make_item(jpeg), out_dir / "3.dcm")
    uids = {first.sop_instance_uid, other.sop_instance_uid, unbound.sop_instance_uid}
    assert len(uids) == 3
    assert other.study_instance_uid == OTHER_STEP.study_instance_uid


def test_files_of_one_step_share_its_study_and_a_later_session_opens_a_new_series(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    def convert(name: str, mtime: float) -> Dataset:
        path = tmp_path / name
        gradient_rgb().rotate(len(name)).save(path, format="PNG")
        converter.convert(make_item(path, mtime=mtime, binding=bound(STEP)), out_dir / name)
        return pydicom.dcmread(out_dir / name)

    a = convert("a.png", MTIME)
    b = convert("bb.png", MTIME + 60)
    later = convert("ccc.png", MTIME + 3 * 3600)  # beyond the 30-minute window
    assert a.StudyInstanceUID == b.StudyInstanceUID == later.StudyInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != later.SeriesInstanceUID
    assert (a.SeriesNumber, b.SeriesNumber, later.SeriesNumber) == (1, 1, 2)
    assert (a.InstanceNumber, b.InstanceNumber, later.InstanceNumber) == (1, 2, 1)
    assert later.StudyDate == a.StudyDate  # one study, one date


def test_step_without_a_study_uid_gets_a_derived_one(
    jpeg: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    step = make_step(accession_number="ACC5", step_id="SPS5", study_instance_uid="")
    result = converter.convert(make_item(jpeg, binding=bound(step)), out_dir / "1.dcm")
    assert result.study_instance_uid.startswith("1.2.826.0.1.3680043.10.999.")
    ds = pydicom.dcmread(out_dir / "1.dcm")
    assert ds.StudyInstanceUID == result.study_instance_uid
    assert_valid_dicom(out_dir / "1.dcm")


def test_held_binding_is_queued_held_with_its_reason(
    jpeg: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    held = Binding(None, item_identity(STEP), "ambiguous: 2 scheduled steps match", "none")
    result = converter.convert(make_item(jpeg, binding=held), out_dir / "1.dcm")
    assert result.held_reason == "ambiguous: 2 scheduled steps match"
    ds = pydicom.dcmread(out_dir / "1.dcm")
    assert "RequestAttributesSequence" not in ds  # not bound: no order is claimed
    assert_valid_dicom(out_dir / "1.dcm")
