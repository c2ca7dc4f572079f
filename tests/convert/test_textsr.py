"""Basic Text SR for free text (gateway.convert.textsr), alone and as the converter writes it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pydicom

from gateway.convert import textsr
from gateway.convert.grouping import StudyGrouper
from gateway.convert.serialconv import SerialConverter
from gateway.convert.settings import ConvertSettings
from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.profile import DeviceProfile, OutputSpec, PrintCaptureProtocol
from gateway.worklist.binding import HELD_NO_IDENTITY, Binding
from tests.convert.builders import NO_PATIENT_ID_WARNING, assert_valid_dicom


def test_pages_split_at_form_feeds_and_skip_blank_ones() -> None:
    text = "page one\r\nline two  \n\f\f  \n\fpage three\n"

    assert textsr.pages(text) == ["page one\r\nline two", "page three"]


def test_page_items_are_comment_text_items_contained_in_the_document() -> None:
    items = textsr.page_items("first\fsecond")

    assert [i.TextValue for i in items] == ["first", "second"]
    assert {i.ValueType for i in items} == {"TEXT"}
    assert {i.RelationshipType for i in items} == {"CONTAINS"}
    assert {i.ConceptNameCodeSequence[0].CodeMeaning for i in items} == {"Comment"}


def test_observation_context_comes_before_the_pages() -> None:
    context = textsr.page_items("ctx")  # any datasets stand in for the context here
    children = textsr.text_report_children(context, "p1\fp2")

    assert [c.TextValue for c in children] == ["ctx", "p1", "p2"]


def _convert(
    tmp_path: Path,
    settings: ConvertSettings,
    grouper: StudyGrouper,
    uids: UidFactory,
    text: str,
    identity: PatientIdentity,
) -> Path:
    profile = DeviceProfile(
        name="printer",
        link=PrintCaptureProtocol(protocol="print-capture"),
        output=OutputSpec(text_pdf=False, text_sr=True),
    )
    message = DeviceMessage(
        source="printer1",
        kind="text",
        identity=identity,
        received_at=1_767_000_000.0,
        text=text,
        raw=text.encode(),
    )
    counter = itertools.count()
    (obj,) = SerialConverter(settings, grouper, uids, profile).convert(
        message, Binding.from_identity(identity), lambda: tmp_path / f"{next(counter)}.dcm"
    )
    assert obj.sop_class_uid == textsr.BASIC_TEXT_SR
    if not identity.known:
        assert obj.held_reason == HELD_NO_IDENTITY
    return obj.path


def test_basic_text_sr_keeps_each_page_whole_including_box_drawing(
    tmp_path: Path, settings: ConvertSettings, grouper: StudyGrouper, uids: UidFactory
) -> None:
    text = "REPORT\n┌──┐\n│72│\n└──┘\fDr. Ærø: normal\n"
    path = _convert(tmp_path, settings, grouper, uids, text, PatientIdentity("P1", "Doe^Jane"))

    assert_valid_dicom(path)
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.Modality == "SR"
    assert (ds.CompletionFlag, ds.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    pages = [i.TextValue for i in ds.ContentSequence if i.RelationshipType == "CONTAINS"]
    assert pages == ["REPORT\r\n┌──┐\r\n│72│\r\n└──┘", "Dr. Ærø: normal"]


def test_basic_text_sr_in_ascii_has_no_character_set_and_is_valid_held(
    tmp_path: Path, settings: ConvertSettings, grouper: StudyGrouper, uids: UidFactory
) -> None:
    path = _convert(tmp_path, settings, grouper, uids, "PLAIN REPORT\n", PatientIdentity())

    assert_valid_dicom(path, also_unavoidable=(NO_PATIENT_ID_WARNING,))
    assert "SpecificCharacterSet" not in pydicom.dcmread(path)


def test_empty_print_job_gives_a_document_with_only_its_context(
    tmp_path: Path, settings: ConvertSettings, grouper: StudyGrouper, uids: UidFactory
) -> None:
    path = _convert(tmp_path, settings, grouper, uids, "\f\f", PatientIdentity("P1"))

    assert_valid_dicom(path)
    ds = pydicom.dcmread(path)
    assert {i.RelationshipType for i in ds.ContentSequence} == {"HAS OBS CONTEXT"}
