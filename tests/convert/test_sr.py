"""Comprehensive SR content items and modules for serial measurements (gateway.convert.sr)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from gateway.convert import sr
from gateway.ingest.serial.message import Concept, Measurement
from tests.convert.conftest import make_settings
from tests.worklist.factory import make_item as make_step

GLUCOSE = Concept("2345-7", "LN", "Glucose [Mass/volume] in Serum or Plasma")


def _measured(item: Dataset) -> Dataset:
    measured: Dataset = item.MeasuredValueSequence[0]
    return measured


@pytest.mark.parametrize("text", ["7.40", "+5", ".5", "-0.010", "1.5E3", "120"])
def test_num_keeps_the_value_text_exactly_as_sent(text: str) -> None:
    item = sr.measurement_item(Measurement("GLU", GLUCOSE, text, "mg/dL"))

    assert item.ValueType == "NUM"
    measured = _measured(item)
    assert str(measured.NumericValue) == text
    # The float highdicom computes would be a second, possibly rounded, copy of the value.
    assert "FloatingPointValue" not in measured


def test_num_has_the_profile_concept_and_a_ucum_unit() -> None:
    item = sr.measurement_item(Measurement("GLU", GLUCOSE, "98", "mg/dL"))

    name = item.ConceptNameCodeSequence[0]
    assert (name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning) == (
        "2345-7",
        "LN",
        "Glucose [Mass/volume] in Serum or Plasma",
    )
    unit = _measured(item).MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("mg/dL", "UCUM")
    assert item.RelationshipType == "CONTAINS"


def test_unitless_value_uses_ucum_one_meaning_no_units() -> None:
    item = sr.measurement_item(Measurement("PH", Concept("2744-1", "LN", "pH"), "7.4", "1"))

    unit = _measured(item).MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodeMeaning) == ("1", "no units")


def test_unit_code_longer_than_sixteen_characters_goes_into_long_code_value() -> None:
    long_unit = "mmol/L{whole.blood}"
    item = sr.measurement_item(Measurement("X", GLUCOSE, "1", long_unit))

    unit = _measured(item).MeasurementUnitsCodeSequence[0]
    assert unit.LongCodeValue == long_unit
    assert "CodeValue" not in unit


@pytest.mark.parametrize("text", ["abc", "12345678901234567", "1e999", "", "7,4", "٣.٥", "1.5\n2"])
def test_value_that_is_no_decimal_string_is_kept_as_text_with_its_concept(text: str) -> None:
    item = sr.measurement_item(Measurement("GLU", GLUCOSE, text, "mg/dL"))

    assert item.ValueType == "TEXT"
    assert item.ConceptNameCodeSequence[0].CodeValue == "2345-7"
    assert item.TextValue.startswith("GLU:")
    assert sr.clean_text(text) in item.TextValue


def test_flags_become_a_comment_on_the_measurement() -> None:
    item = sr.measurement_item(Measurement("GLU", GLUCOSE, "250", "mg/dL", flags=("H", "F")))

    (note,) = item.ContentSequence
    assert note.RelationshipType == "HAS PROPERTIES"
    assert note.ValueType == "TEXT"
    assert note.ConceptNameCodeSequence[0].CodeValue == "121106"
    assert note.TextValue == "Device flags: H F"


def test_device_time_becomes_observation_datetime() -> None:
    item = sr.measurement_item(
        Measurement("GLU", GLUCOSE, "98", "mg/dL", observed_at="20260102081500")
    )

    assert item.ObservationDateTime == "20260102081500"
    assert "ContentSequence" not in item


def test_device_time_that_is_no_dicom_datetime_is_kept_as_a_note() -> None:
    item = sr.measurement_item(Measurement("GLU", GLUCOSE, "98", "mg/dL", observed_at="02/01/26"))

    assert "ObservationDateTime" not in item
    assert item.ContentSequence[0].TextValue == "Observed at: 02/01/26"


def test_text_items_one_comment_per_non_blank_line() -> None:
    items = sr.text_items("NA 140 mmol/L\r\n\n  \nC: sample hemolysed\n")

    assert [i.TextValue for i in items] == ["NA 140 mmol/L", "C: sample hemolysed"]
    assert all(i.RelationshipType == "CONTAINS" for i in items)
    assert sr.text_items(None) == []


def test_clean_text_marks_control_characters_instead_of_dropping_them() -> None:
    assert sr.clean_text("a\x07b\r\nc\td  ") == "a\ufffdb\r\nc\td"
    assert sr.clean_text("x\udcff\x00y") == "x\ufffd\ufffdy"


def test_observation_context_names_the_device_and_the_patient_class() -> None:
    settings = make_settings()
    items = sr.observation_context(settings, "1.2.826.0.1.3680043.10.999.5", "lab1")

    assert all(i.RelationshipType == "HAS OBS CONTEXT" for i in items)
    by_code = {i.ConceptNameCodeSequence[0].CodeValue: i for i in items}
    assert by_code["121005"].ConceptCodeSequence[0].CodeValue == "121007"  # Device
    assert by_code["121012"].UID == "1.2.826.0.1.3680043.10.999.5"
    assert by_code["121013"].TextValue == "lab1"
    assert by_code["121014"].TextValue == settings.manufacturer
    assert by_code["121015"].TextValue == settings.model_name
    assert by_code["121016"].TextValue == settings.device_serial_number
    assert by_code["121024"].ConceptCodeSequence[0].CodeValue == "121025"  # Patient


def test_observation_context_leaves_out_empty_equipment_fields() -> None:
    settings = make_settings(model_name="", device_serial_number="")
    items = sr.observation_context(settings, "1.2.3", "")

    codes = {i.ConceptNameCodeSequence[0].CodeValue for i in items}
    assert codes == {"121005", "121012", "121014", "121024"}


def _common() -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.999.1"
    ds.ConversionType = "DI"
    ds.SecondaryCaptureDeviceManufacturer = "EDGEGW"
    ds.SecondaryCaptureDeviceSoftwareVersions = "1"
    ds.BurnedInAnnotation = "YES"
    ds.RequestAttributesSequence = [Dataset()]
    return ds


def test_sr_document_unbound_has_no_request_and_no_image_attributes() -> None:
    ds = _common()
    sr.add_sr_document(ds, GLUCOSE, [], None)

    for keyword in (
        "ConversionType",
        "SecondaryCaptureDeviceManufacturer",
        "BurnedInAnnotation",
        "RequestAttributesSequence",
        "ReferencedRequestSequence",
    ):
        assert keyword not in ds
    assert ds.CompletionFlag == "COMPLETE"
    assert ds.VerificationFlag == "UNVERIFIED"
    assert ds.PerformedProcedureCodeSequence == []
    assert ds.ValueType == "CONTAINER"
    assert ds.ContinuityOfContent == "SEPARATE"
    assert "RelationshipType" not in ds
    assert ds.ConceptNameCodeSequence[0].CodeValue == "2345-7"


def test_sr_document_bound_references_the_request_and_performs_its_procedure() -> None:
    code = Dataset()
    code.CodeValue = "24331-1"
    code.CodingSchemeDesignator = "LN"
    code.CodeMeaning = "Lipid panel"
    step = make_step(
        accession_number="ACC9",
        requested_procedure_id="RP9",
        study_instance_uid="1.2.826.0.1.3680043.10.999.9",
        RequestedProcedureCodeSequence=[code],
    )
    ds = _common()
    sr.add_sr_document(ds, GLUCOSE, [], step)

    (request,) = ds.ReferencedRequestSequence
    assert request.StudyInstanceUID == "1.2.826.0.1.3680043.10.999.9"
    assert request.AccessionNumber == "ACC9"
    assert request.RequestedProcedureID == "RP9"
    assert request.RequestedProcedureDescription == "Abdomen"
    assert request.RequestedProcedureCodeSequence[0].CodeValue == "24331-1"
    assert ds.PerformedProcedureCodeSequence[0].CodeValue == "24331-1"
    assert "RequestAttributesSequence" not in ds


def test_sr_request_of_a_step_without_study_uid_names_the_object_study() -> None:
    step = make_step(study_instance_uid="")
    ds = _common()
    sr.apply_sr_request(ds, step)

    assert ds.ReferencedRequestSequence[0].StudyInstanceUID == ds.StudyInstanceUID
    assert ds.PerformedProcedureCodeSequence == []


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=24), flags=st.lists(st.text(max_size=4), max_size=3))
def test_any_device_value_becomes_num_or_text_and_is_never_lost(
    value: str, flags: list[str]
) -> None:
    item = sr.measurement_item(Measurement("GLU", GLUCOSE, value, "mg/dL", flags=tuple(flags)))

    if item.ValueType == "NUM":
        assert str(item.MeasuredValueSequence[0].NumericValue) == value.strip()
        assert value.strip().isascii()
    else:
        assert item.ValueType == "TEXT"
        assert sr.clean_text(value).strip() in item.TextValue
