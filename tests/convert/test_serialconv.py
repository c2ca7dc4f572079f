"""SerialConverter: device messages to SR / Encapsulated PDF, bound and unbound, dciodvfy-clean."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.clock import SystemClock
from gateway.convert.grouping import StudyGrouper
from gateway.convert.result import ConversionError
from gateway.convert.serialconv import SerialConverter
from gateway.convert.settings import ConvertSettings
from gateway.convert.textpdf import render_print_job
from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.ingest.serial.message import Concept, DeviceMessage, Measurement
from gateway.ingest.serial.profile import (
    AstmProtocol,
    ConceptSpec,
    DeviceProfile,
    LineKvProtocol,
    OutputSpec,
    PrintCaptureProtocol,
)
from gateway.spool.store import Spool
from gateway.worklist.binding import HELD_NO_IDENTITY, Binding, item_identity
from gateway.worklist.item import WorklistItem
from tests.convert.builders import NO_PATIENT_ID_WARNING, assert_valid_dicom
from tests.convert.conftest import Staging
from tests.peers import require_tool
from tests.worklist.factory import make_item as make_step

RECEIVED = 1_767_000_000.0
JANE = PatientIdentity("PID-0001", "Doe^Jane")
JOHN = PatientIdentity("P-2002", "Doe^John")
LAB_TITLE = ConceptSpec(value="11502-2", scheme="LN", meaning="Laboratory report")
ECG_TITLE = ConceptSpec(value="11524-6", scheme="LN", meaning="EKG study")

GLUCOSE = Measurement(
    "GLU",
    Concept("2345-7", "LN", "Glucose [Mass/volume] in Serum or Plasma"),
    "98.50",
    "mg/dL",
    flags=("H",),
    observed_at="20251229091500",
)
PH = Measurement("PH", Concept("2744-1", "LN", "pH of Arterial blood"), "7.40", "[pH]")
PO2 = Measurement(
    "PO2", Concept("2703-7", "LN", "Oxygen [Partial pressure] in Arterial blood"), "95", "mm[Hg]"
)

PRINTOUT = (
    "ECG REPORT                                   Page 1\n"
    " Patient: Doe^John    ID: P-2002\n"
    "┌────────────┐\n│ HR  72/min │\n└────────────┘\n"
    "\f"
    "INTERPRETATION\n Sinus rhythm.\n\f"
)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
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
    RequestedProcedureCodeSequence=Sequence([_code("24336-0", "LN", "Gas panel - Arterial blood")]),
)


def astm_profile(**output: object) -> DeviceProfile:
    return DeviceProfile(
        name="bloodgas",
        link=AstmProtocol(protocol="astm-e1394"),
        output=OutputSpec(document_title=LAB_TITLE, **output),  # type: ignore[arg-type]
    )


def print_profile(**output: object) -> DeviceProfile:
    return DeviceProfile(
        name="ecg-printer",
        link=PrintCaptureProtocol(protocol="print-capture", columns=60, lines_per_page=40),
        output=OutputSpec(document_title=ECG_TITLE, **output),  # type: ignore[arg-type]
    )


def measurements(
    identity: PatientIdentity = JANE,
    items: tuple[Measurement, ...] = (GLUCOSE, PH, PO2),
    text: str | None = None,
    raw: bytes = b"H|\\^&\rP|1||PID-0001\rR|1|^^^GLU|98.50|mg/dL\rL|1\r",
) -> DeviceMessage:
    return DeviceMessage(
        source="lab1",
        kind="measurements",
        identity=identity,
        received_at=RECEIVED,
        measurements=items,
        text=text,
        title="Blood gas",
        raw=raw,
    )


def print_job(identity: PatientIdentity = JOHN, text: str = PRINTOUT) -> DeviceMessage:
    return DeviceMessage(
        source="ecg1",
        kind="text",
        identity=identity,
        received_at=RECEIVED,
        text=text,
        title="ECG report",
        raw=text.encode("utf-8"),
    )


def bound(step: WorklistItem = STEP) -> Binding:
    return Binding(step, item_identity(step), None, "selection")


@pytest.fixture
def make_converter(
    settings: ConvertSettings, grouper: StudyGrouper, uids: UidFactory
) -> Callable[[DeviceProfile], SerialConverter]:
    return lambda profile: SerialConverter(settings, grouper, uids, profile)


Make = Callable[[DeviceProfile], SerialConverter]


def _read(path: Path) -> Dataset:
    return pydicom.dcmread(path)


def _content(ds: Dataset) -> list[Dataset]:
    return list(ds.ContentSequence)


# -- measurements -----------------------------------------------------------------------


def test_measurements_become_one_comprehensive_sr_that_dciodvfy_accepts(
    make_converter: Make, staging: Staging
) -> None:
    message = measurements()
    (obj,) = make_converter(astm_profile()).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert_valid_dicom(obj.path)
    ds = _read(obj.path)
    assert obj.sop_class_uid == ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    assert obj.held_reason is None
    assert ds.Modality == "SR"
    assert (ds.PatientID, str(ds.PatientName)) == ("PID-0001", "Doe^Jane")
    assert "SpecificCharacterSet" not in ds
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert ds.ConceptNameCodeSequence[0].CodeValue == "11502-2"
    local = time.localtime(RECEIVED)
    assert ds.ContentDate == time.strftime("%Y%m%d", local)
    assert ds.ContentTime == time.strftime("%H%M%S", local)
    nums = [i for i in _content(ds) if i.ValueType == "NUM"]
    assert [str(n.MeasuredValueSequence[0].NumericValue) for n in nums] == ["98.50", "7.40", "95"]
    units = [n.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0] for n in nums]
    assert [(u.CodeValue, u.CodingSchemeDesignator) for u in units] == [
        ("mg/dL", "UCUM"),
        ("[pH]", "UCUM"),
        ("mm[Hg]", "UCUM"),
    ]
    assert nums[0].ContentSequence[0].TextValue == "Device flags: H"
    assert nums[0].ObservationDateTime == "20251229091500"
    assert "ReferencedRequestSequence" not in ds
    assert "RequestAttributesSequence" not in ds


def test_measurement_sr_names_the_device_as_observer(
    make_converter: Make, staging: Staging, settings: ConvertSettings
) -> None:
    message = measurements()
    (obj,) = make_converter(astm_profile()).convert(
        message, Binding.from_identity(message.identity), staging
    )

    context = [i for i in _content(_read(obj.path)) if i.RelationshipType == "HAS OBS CONTEXT"]
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.get("TextValue") for i in context}
    assert texts["Device Observer Name"] == "lab1"
    assert texts["Device Observer Manufacturer"] == settings.manufacturer
    assert texts["Device Observer Model Name"] == settings.model_name
    assert texts["Device Observer Serial Number"] == settings.device_serial_number


def test_bound_sr_carries_the_worklist_patient_and_its_request(
    make_converter: Make, staging: Staging
) -> None:
    # The device sent another name; the binding's (worklist) patient is what the object carries.
    (obj,) = make_converter(astm_profile()).convert(measurements(), bound(), staging)

    assert_valid_dicom(obj.path)
    ds = _read(obj.path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert (ds.PatientID, str(ds.PatientName)) == ("P-JÖRG", "Müller^Jörg")
    assert ds.StudyInstanceUID == STEP.study_instance_uid == obj.study_instance_uid
    assert ds.AccessionNumber == "ACC1"
    (request,) = ds.ReferencedRequestSequence
    assert request.AccessionNumber == "ACC1"
    assert request.RequestedProcedureID == "RP1"
    assert request.StudyInstanceUID == STEP.study_instance_uid
    assert ds.PerformedProcedureCodeSequence[0].CodeValue == "24336-0"
    assert "RequestAttributesSequence" not in ds
    # The content tree never repeats the patient: a later rebind rewrites the Patient module.
    assert "Jörg" not in str(ds.ContentSequence)


def test_unbound_sr_with_a_non_ascii_name_declares_utf8(
    make_converter: Make, staging: Staging
) -> None:
    message = measurements(identity=PatientIdentity("P-55", "Ødegård^Åse"))
    (obj,) = make_converter(astm_profile()).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert_valid_dicom(obj.path)
    ds = _read(obj.path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Ødegård^Åse"


def test_unknown_patient_is_held_and_still_valid(make_converter: Make, staging: Staging) -> None:
    message = measurements(identity=PatientIdentity())
    (obj,) = make_converter(astm_profile()).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert obj.held_reason == HELD_NO_IDENTITY
    assert_valid_dicom(obj.path, also_unavoidable=(NO_PATIENT_ID_WARNING,))


def test_binding_held_reason_is_passed_on(make_converter: Make, staging: Staging) -> None:
    identity = PatientIdentity("PID-0001")
    binding = Binding(None, identity, "no worklist match (P record)", "none")
    (obj,) = make_converter(astm_profile()).convert(measurements(identity), binding, staging)

    assert obj.held_reason == "no worklist match (P record)"


def test_mixed_message_keeps_unmapped_results_and_comments_as_text(
    make_converter: Make, staging: Staging
) -> None:
    message = measurements(
        items=(PH, Measurement("HB", Concept("718-7", "LN", "Hemoglobin"), "n/a", "g/dL")),
        text="K 4.1 mmol/L\nC: sample slightly hemolysed",
    )
    (obj,) = make_converter(astm_profile()).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert_valid_dicom(obj.path)
    items = [i for i in _content(_read(obj.path)) if i.RelationshipType == "CONTAINS"]
    assert [i.ValueType for i in items] == ["NUM", "TEXT", "TEXT", "TEXT"]
    assert [i.get("TextValue") for i in items[1:]] == [
        "HB: n/a g/dL",
        "K 4.1 mmol/L",
        "C: sample slightly hemolysed",
    ]


def test_message_with_only_unmapped_results_is_an_sr_of_text(
    make_converter: Make, staging: Staging
) -> None:
    message = measurements(items=(), text="XYZ 12 foo")
    (obj,) = make_converter(astm_profile()).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert_valid_dicom(obj.path)
    contains = [i for i in _content(_read(obj.path)) if i.RelationshipType == "CONTAINS"]
    assert [i.TextValue for i in contains] == ["XYZ 12 foo"]


# -- text -------------------------------------------------------------------------------


def test_print_job_becomes_encapsulated_pdf_that_dciodvfy_accepts(
    make_converter: Make, staging: Staging
) -> None:
    message = print_job()
    (obj,) = make_converter(print_profile()).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert_valid_dicom(obj.path)
    ds = _read(obj.path)
    assert obj.sop_class_uid == ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert ds.Modality == "DOC"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.DocumentTitle == "ECG report"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "11524-6"
    expected = render_print_job(PRINTOUT, 60, 40, RECEIVED, "ECG report")
    assert ds.EncapsulatedDocumentLength == len(expected)
    assert bytes(ds.EncapsulatedDocument)[: len(expected)] == expected


def test_print_job_with_text_sr_gives_pdf_and_basic_text_sr_in_one_study(
    make_converter: Make, staging: Staging
) -> None:
    pdf_obj, sr_obj = make_converter(print_profile(text_sr=True)).convert(
        print_job(), bound(), staging
    )

    assert_valid_dicom(pdf_obj.path)
    assert_valid_dicom(sr_obj.path)
    pdf_ds, sr_ds = _read(pdf_obj.path), _read(sr_obj.path)
    assert sr_ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11"
    assert sr_ds.StudyInstanceUID == pdf_ds.StudyInstanceUID == STEP.study_instance_uid
    # One modality per series: the SR sits in a series of its own beside the PDF's.
    assert sr_ds.SeriesInstanceUID != pdf_ds.SeriesInstanceUID
    assert (pdf_ds.Modality, sr_ds.Modality) == ("DOC", "SR")
    assert sr_ds.ReferencedRequestSequence[0].AccessionNumber == "ACC1"
    assert pdf_ds.RequestAttributesSequence[0].AccessionNumber == "ACC1"


def test_text_sr_only_profile_gives_only_the_basic_text_sr(
    make_converter: Make, staging: Staging
) -> None:
    message = print_job()
    (obj,) = make_converter(print_profile(text_pdf=False, text_sr=True)).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert obj.sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.11"
    assert_valid_dicom(obj.path)


def test_text_from_a_non_printer_profile_uses_an_80_by_66_form(
    make_converter: Make, staging: Staging
) -> None:
    profile = DeviceProfile(name="kv", link=LineKvProtocol(protocol="line-kv"))
    message = print_job(text="a report\n")
    (obj,) = make_converter(profile).convert(
        message, Binding.from_identity(message.identity), staging
    )

    expected = render_print_job("a report\n", 80, 66, RECEIVED, "ECG report")
    assert bytes(_read(obj.path).EncapsulatedDocument)[: len(expected)] == expected


def test_both_text_outputs_off_refuses_the_message_rather_than_dropping_it(
    make_converter: Make, staging: Staging, out_dir: Path
) -> None:
    converter = make_converter(print_profile(text_pdf=False, text_sr=False))

    with pytest.raises(ConversionError, match="both text outputs"):
        converter.convert(print_job(), bound(), staging)
    assert list(out_dir.iterdir()) == []


# -- identity, retransmission, refusal --------------------------------------------------


def test_retransmitted_message_gives_the_same_instance_and_a_queue_duplicate(
    tmp_path: Path, make_converter: Make, staging: Staging
) -> None:
    converter = make_converter(print_profile(text_sr=True))
    message = print_job()
    binding = Binding.from_identity(message.identity)
    spool = Spool(tmp_path / "state", ["pacs"], 1 << 30, SystemClock())
    spool.open()
    try:
        first = converter.convert(message, binding, spool.staging_path)
        first_bytes = [o.path.read_bytes() for o in first]
        assert [spool.enqueue(o, "ecg1").duplicate for o in first] == [False, False]
        again = converter.convert(message, binding, spool.staging_path)
        assert [o.path.read_bytes() for o in again] == first_bytes
        assert [o.sop_instance_uid for o in again] == [o.sop_instance_uid for o in first]
        assert [spool.enqueue(o, "ecg1").duplicate for o in again] == [True, True]
    finally:
        spool.close()


def test_same_bytes_for_another_patient_is_another_instance(
    make_converter: Make, staging: Staging
) -> None:
    converter = make_converter(astm_profile())
    message = measurements()
    (unbound,) = converter.convert(message, Binding.from_identity(message.identity), staging)
    (to_step,) = converter.convert(message, bound(), staging)
    other = bound(make_step(patient_id="P-ANNA", accession_number="ACC2", step_id="SPS2"))
    (to_other,) = converter.convert(message, other, staging)

    uids = {unbound.sop_instance_uid, to_step.sop_instance_uid, to_other.sop_instance_uid}
    assert len(uids) == 3


def test_messages_of_one_patient_share_a_study_and_number_their_instances(
    make_converter: Make, staging: Staging
) -> None:
    converter = make_converter(astm_profile())
    first = measurements(raw=b"one")
    second = measurements(raw=b"two")
    (a,) = converter.convert(first, Binding.from_identity(first.identity), staging)
    (b,) = converter.convert(second, Binding.from_identity(second.identity), staging)

    da, db = _read(a.path), _read(b.path)
    assert da.StudyInstanceUID == db.StudyInstanceUID
    assert da.SeriesInstanceUID == db.SeriesInstanceUID
    assert (da.InstanceNumber, db.InstanceNumber) == (1, 2)
    assert a.sop_instance_uid != b.sop_instance_uid


def test_identity_that_is_no_valid_dicom_is_refused_and_leaves_no_file(
    make_converter: Make, staging: Staging, out_dir: Path
) -> None:
    message = measurements(identity=PatientIdentity("PID\\1"))
    with pytest.raises(ConversionError):
        make_converter(astm_profile()).convert(
            message, Binding.from_identity(message.identity), staging
        )
    assert list(out_dir.iterdir()) == []


def test_a_tid1500_profile_is_refused_when_the_profile_is_loaded() -> None:
    with pytest.raises(ValueError, match="comprehensive-sr"):
        astm_profile(measurements="tid1500")


def test_series_description_comes_from_the_profile(make_converter: Make, staging: Staging) -> None:
    message = measurements()
    (obj,) = make_converter(astm_profile(series_description="Blood gas")).convert(
        message, Binding.from_identity(message.identity), staging
    )

    assert _read(obj.path).SeriesDescription == "Blood gas"
    assert_valid_dicom(obj.path)


# dsrdump's VR checker cannot check UTF-8 values; it says so and reads on.
_DSRDUMP_UTF8_NOTE = "VR checker does not support this Specific Character Set: ISO_IR 192"


@pytest.mark.parametrize("name", ["Doe^Jane", "Ødegård^Åse"])
def test_dcmtk_reads_every_sr_tree_without_a_complaint(
    make_converter: Make, staging: Staging, name: str
) -> None:
    # DCMTK's SR classes check value types and relationship constraints of each IOD on reading.
    dsrdump = require_tool("dsrdump")
    identity = PatientIdentity("P-1", name)
    mixed = measurements(identity=identity, text="K 4.1 mmol/L")
    objects = [
        *make_converter(astm_profile()).convert(mixed, bound(), staging),
        *make_converter(print_profile(text_sr=True)).convert(
            print_job(identity=identity), Binding.from_identity(identity), staging
        ),
    ]
    srs = [o for o in objects if o.sop_class_uid != "1.2.840.10008.5.1.4.1.1.104.1"]
    assert len(srs) == 2
    for obj in srs:
        proc = subprocess.run(
            [dsrdump, "-Ee", str(obj.path)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        complaints = [
            line
            for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith(("W:", "E:", "F:")) and _DSRDUMP_UTF8_NOTE not in line
        ]
        assert complaints == []
        assert "<CONTAINER:" in proc.stdout


def test_a_held_sr_reconciled_to_a_worklist_step_carries_a_referenced_request_and_stays_valid(
    make_converter: Make, staging: Staging, out_dir: Path
) -> None:
    from gateway.convert.bindattrs import apply_item
    from gateway.convert.coerce import rewrite_part10

    held = Binding(None, PatientIdentity(), "no worklist match", "none")
    (obj,) = make_converter(astm_profile()).convert(measurements(PatientIdentity()), held, staging)
    rebound = out_dir / "rebound.dcm"
    rewrite_part10(
        obj.path, rebound, lambda ds: apply_item(ds, STEP), reason="CORRECT", keep_original=True
    )
    ds = _read(rebound)
    assert "RequestAttributesSequence" not in ds
    assert ds.ReferencedRequestSequence[0].AccessionNumber == "ACC1"
    assert ds.StudyInstanceUID == STEP.study_instance_uid
    assert str(ds.PatientName) == "Müller^Jörg"
    assert_valid_dicom(rebound)
