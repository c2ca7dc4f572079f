"""Rules every created object follows: identity, character set, equipment, determinism."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pydicom
import pytest

from gateway.convert.converter import HELD_NO_IDENTITY, Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.result import ConversionError
from gateway.identity import PatientIdentity
from gateway.ingest.identity import identity_from_filename
from gateway.product import IMPLEMENTATION_CLASS_UID
from gateway.worklist.binding import Binding
from tests.convert.builders import (
    NO_PATIENT_ID_WARNING,
    assert_valid_dicom,
    gray_image,
    minimal_pdf,
)
from tests.convert.conftest import IDENTITY, MTIME, ItemFactory


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "screen.png"
    gray_image().save(path)
    return path


def test_equipment_patient_and_study_attributes(
    png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    out = out_dir / "out.dcm"
    result = converter.convert(make_item(png), out)
    ds = pydicom.dcmread(out)
    assert (ds.PatientID, str(ds.PatientName), ds.AccessionNumber) == ("PID-0001", "Doe^Jane", "A1")
    assert ds.Manufacturer == "Acme"
    assert ds.InstitutionName == "Clinic"
    assert ds.StationName == "US1"
    assert ds.ManufacturerModelName == "Scope 9"
    assert ds.DeviceSerialNumber == "SN-77"
    assert ds.SoftwareVersions == "4.2"
    assert ds.ConversionType == "DI"
    assert ds.Modality == "OT"
    assert ds.ReferringPhysicianName == ""
    assert ds.BurnedInAnnotation == "YES"
    assert ds.StudyInstanceUID == result.study_instance_uid
    assert (ds.StudyID, ds.SeriesNumber, ds.InstanceNumber) == ("1", 1, 1)
    assert ds.file_meta.ImplementationVersionName == "EDGEGW_0.1.0"
    assert ds.file_meta.SourceApplicationEntityTitle == "EDGE_GW"
    # The product's identity, not one derived from the site's uid_root (issue 11 item 13).
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert not ds.file_meta.ImplementationClassUID.startswith("1.2.826.0.1.3680043.10.999.")
    assert "SpecificCharacterSet" not in ds  # ASCII only: default repertoire
    assert result.held_reason is None


def test_dates_and_times_come_from_the_file_time(
    png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    import time

    converter.convert(make_item(png, mtime=MTIME), out_dir / "out.dcm")
    ds = pydicom.dcmread(out_dir / "out.dcm")
    local = time.localtime(MTIME)
    assert ds.ContentDate == ds.StudyDate == time.strftime("%Y%m%d", local)
    assert ds.ContentTime == time.strftime("%H%M%S", local)


def test_same_input_converts_to_the_same_bytes(
    png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    first = converter.convert(make_item(png), out_dir / "one.dcm")
    second = converter.convert(make_item(png), out_dir / "two.dcm")
    assert first.sop_instance_uid == second.sop_instance_uid
    assert first.source_sha256 == second.source_sha256
    assert (out_dir / "one.dcm").read_bytes() == (out_dir / "two.dcm").read_bytes()


def test_same_bytes_for_another_patient_get_another_instance(
    png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    first = converter.convert(make_item(png), out_dir / "one.dcm")
    other = PatientIdentity(patient_id="PID-0002", patient_name="Roe^Rita")
    second = converter.convert(make_item(png, identity=other), out_dir / "two.dcm")
    assert first.sop_instance_uid != second.sop_instance_uid
    assert first.study_instance_uid != second.study_instance_uid


def test_same_bytes_from_another_file_get_another_instance_even_with_no_identity(
    png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    unknown = PatientIdentity()
    first = converter.convert(make_item(png, identity=unknown), out_dir / "one.dcm")
    copy = png.with_name(os.fsdecode(b"copy \xfc.png"))  # a name that is not UTF-8, too
    shutil.copyfile(png, copy)
    second = converter.convert(make_item(copy, identity=unknown), out_dir / "two.dcm")
    again = converter.convert(make_item(copy, identity=unknown), out_dir / "three.dcm")
    assert first.source_sha256 == second.source_sha256
    assert first.sop_instance_uid != second.sop_instance_uid  # issue 10 A2: never one object
    assert again.sop_instance_uid == second.sop_instance_uid  # the same file: the same instance


def test_files_of_one_visit_share_the_study_and_a_series_per_modality(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    paths = []
    for seed in range(2):
        path = tmp_path / f"shot{seed}.png"
        gray_image(seed=seed + 10).save(path)
        paths.append(path)
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(minimal_pdf())
    paths.append(pdf)
    datasets = []
    for i, path in enumerate(paths):
        converter.convert(make_item(path, mtime=MTIME + 60 * i), out_dir / f"{i}.dcm")
        datasets.append(pydicom.dcmread(out_dir / f"{i}.dcm"))
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    # A series holds one modality: the images (OT) share one, the PDF (DOC) has its own.
    images, report = datasets[:2], datasets[2]
    assert images[0].SeriesInstanceUID == images[1].SeriesInstanceUID != report.SeriesInstanceUID
    assert [ds.Modality for ds in datasets] == ["OT", "OT", "DOC"]
    assert [(ds.SeriesNumber, ds.InstanceNumber) for ds in datasets] == [(1, 1), (1, 2), (2, 1)]
    assert len({ds.StudyID for ds in datasets}) == 1
    assert len({(ds.StudyDate, ds.StudyTime) for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 3


def test_unknown_identity_converts_but_is_held(
    png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    out = out_dir / "out.dcm"
    result = converter.convert(make_item(png, identity=PatientIdentity()), out)
    assert result.held_reason == HELD_NO_IDENTITY
    assert_valid_dicom(out, also_unavoidable=(NO_PATIENT_ID_WARNING,))
    ds = pydicom.dcmread(out)
    assert ds.PatientID == "" and ds.PatientName == "" and ds.AccessionNumber == ""


@pytest.mark.parametrize(
    "name",
    ["Müller^Jürgen", "山田^太郎=やまだ^たろう", "Ørsted^Åse"],
    ids=["german", "japanese", "nordic"],
)
def test_non_ascii_names_are_written_as_utf8(
    name: str, png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    out = out_dir / "out.dcm"
    converter.convert(make_item(png, identity=PatientIdentity("P7", name)), out)
    assert_valid_dicom(out)
    raw = out.read_bytes()
    assert name.encode("utf-8") in raw
    ds = pydicom.dcmread(out)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == name


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (PatientIdentity(patient_id="12\\34"), "patient ID contains"),
        (PatientIdentity(patient_id="X" * 65), "patient ID longer"),
        (PatientIdentity(patient_id="PQ", patient_name="A^B^C^D^E^F"), "five components"),
        (PatientIdentity(patient_id="PQ", accession_number="A" * 17), "accession number longer"),
        (PatientIdentity(patient_id="1\n2"), "control characters"),
    ],
)
def test_identity_that_dicom_cannot_carry_is_refused_without_echoing_it(
    identity: PatientIdentity,
    reason: str,
    png: Path,
    out_dir: Path,
    converter: Converter,
    grouper: StudyGrouper,
    make_item: ItemFactory,
) -> None:
    with pytest.raises(ConversionError, match=reason) as caught:
        converter.convert(make_item(png, identity=identity), out_dir / "out.dcm")
    assert identity.patient_id
    assert identity.patient_id not in caught.value.reason
    # Refused before grouping: the next good file still starts study 1 at instance 1.
    good = grouper.assign("scope", IDENTITY, MTIME, "other", modality="OT")
    assert (good.study_id, good.instance_number) == ("1", 1)


def test_identity_less_files_never_share_a_study_even_with_the_same_bytes(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    # The reviewer's drop: one BMP as P501_<70 x L>_a.bmp and P502_<70 x L>_a.bmp. The names
    # are over-long, so the identity is unknown and both are held; the operator later binds
    # each to its own patient and the UIDs stay, so they must be two studies already now.
    pattern = re.compile(r"^(?P<patient_id>P\d+)_(?P<patient_name>[^_]+)_")
    paths = []
    for pid in ("P501", "P502"):
        path = tmp_path / f"{pid}_{'L' * 70}_a.bmp"
        gray_image(seed=3).save(path)
        paths.append(path)
    results, datasets = [], []
    for i, path in enumerate(paths):
        identity = identity_from_filename(pattern, path.name)
        assert not identity.known
        results.append(converter.convert(make_item(path, identity=identity), out_dir / f"{i}.dcm"))
        datasets.append(pydicom.dcmread(out_dir / f"{i}.dcm"))
    assert [r.held_reason for r in results] == [HELD_NO_IDENTITY] * 2
    first, second = datasets
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.SeriesInstanceUID != second.SeriesInstanceUID
    assert (first.InstanceNumber, second.InstanceNumber) == (1, 1)  # each alone in its series
    # A re-ingest of the same file (a resend after a crash) gets the same assignment.
    unknown = identity_from_filename(pattern, paths[0].name)
    converter.convert(make_item(paths[0], identity=unknown), out_dir / "again.dcm")
    again = pydicom.dcmread(out_dir / "again.dcm")
    assert again.StudyInstanceUID == first.StudyInstanceUID
    assert again.SeriesInstanceUID == first.SeriesInstanceUID
    assert again.SOPInstanceUID == first.SOPInstanceUID
    # Nor does a held file join a study of known patients in that window.
    known = converter.convert(make_item(paths[1]), out_dir / "known.dcm")
    assert known.study_instance_uid not in {first.StudyInstanceUID, second.StudyInstanceUID}


def test_the_same_bytes_under_two_names_are_two_instances_and_a_later_copy_a_new_study(
    png: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    # Grouping knows a file by what its SOP Instance UID is derived from (bytes and path), so a
    # copy under another name is another instance, not the first one's assignment again. No
    # accession number: then the study is the visit, by time (with one it is the order's).
    patient = PatientIdentity(patient_id="PID-0001", patient_name="Doe^Jane")
    copy = png.with_name("screen copy.png")
    shutil.copyfile(png, copy)
    first = converter.convert(make_item(png, identity=patient), out_dir / "one.dcm")
    second = converter.convert(make_item(copy, identity=patient), out_dir / "two.dcm")
    one, two = (pydicom.dcmread(out_dir / name) for name in ("one.dcm", "two.dcm"))
    assert first.sop_instance_uid != second.sop_instance_uid
    assert one.SeriesInstanceUID == two.SeriesInstanceUID  # one patient, one visit, one series
    assert (one.InstanceNumber, two.InstanceNumber) == (1, 2)
    # The same bytes dropped again a week later, under a third name: a new visit, a new study.
    later = png.with_name("screen again.png")
    shutil.copyfile(png, later)
    week = 7 * 24 * 3600.0
    third = converter.convert(
        make_item(later, identity=patient, mtime=MTIME + week), out_dir / "three.dcm"
    )
    assert third.study_instance_uid != first.study_instance_uid
    # And the first file again is still the first instance.
    converter.convert(make_item(png, identity=patient), out_dir / "again.dcm")
    assert pydicom.dcmread(out_dir / "again.dcm").InstanceNumber == 1


def test_an_object_held_for_its_patient_shares_no_study_even_with_a_known_identity(
    tmp_path: Path, out_dir: Path, converter: Converter, make_item: ItemFactory
) -> None:
    # Held for a conflict (the sidecar names another patient): the operator may bind it to
    # another patient, and binding keeps the UIDs, so it must not sit in this patient's study.
    sent, held = tmp_path / "a.png", tmp_path / "b.png"
    gray_image(seed=1).save(sent)
    gray_image(seed=2).save(held)
    reason = "conflict: the file name and the sidecar give different patient ID"
    binding = Binding(None, IDENTITY, reason, "none")
    first = converter.convert(make_item(sent), out_dir / "sent.dcm")
    second = converter.convert(make_item(held, binding=binding), out_dir / "held.dcm")
    assert second.held_reason == reason
    assert first.study_instance_uid != second.study_instance_uid
    # Nor does a later file of the patient join the held one's study.
    third = tmp_path / "c.png"
    gray_image(seed=3).save(third)
    later = converter.convert(make_item(third, mtime=MTIME + 60), out_dir / "later.dcm")
    assert later.study_instance_uid == first.study_instance_uid
