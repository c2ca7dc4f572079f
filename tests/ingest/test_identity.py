"""identity_from_filename: what a file name may and may not tell about the patient."""

from __future__ import annotations

import os
import re
import unicodedata

import pytest

from gateway.identity import PatientIdentity
from gateway.ingest.identity import identity_from_filename, read_filename_identity

PATTERN = re.compile(
    r"^(?P<patient_id>[^_]*)_(?P<patient_name>[^_]*)_(?P<accession_number>[^_.]*)\.\w+$"
)
UNKNOWN = PatientIdentity()


def test_no_pattern_means_unknown_identity() -> None:
    assert identity_from_filename(None, "12345_Doe^Jane_A1.jpg") == UNKNOWN


def test_a_name_the_pattern_does_not_match_gives_an_unknown_identity() -> None:
    assert identity_from_filename(PATTERN, "scan0001.jpg") == UNKNOWN


def test_the_named_groups_give_id_name_and_accession() -> None:
    identity = identity_from_filename(PATTERN, "12345_Doe^Jane_ACC-77.jpg")
    assert identity == PatientIdentity("12345", "Doe^Jane", "ACC-77")
    assert identity.known


def test_the_pattern_is_searched_anywhere_in_the_name() -> None:
    pattern = re.compile(r"ID(?P<patient_id>\d+)")
    assert identity_from_filename(pattern, "img-ID0042-left.png").patient_id == "0042"


def test_spaces_are_stripped_and_empty_values_are_unknown() -> None:
    identity = identity_from_filename(PATTERN, " 12345 _ _  .jpg")
    assert identity == PatientIdentity("12345", None, None)


def test_groups_absent_from_the_pattern_or_unmatched_are_unknown() -> None:
    pattern = re.compile(r"^(?P<patient_id>\d+)(-(?P<accession_number>\w+))?\.")
    assert identity_from_filename(pattern, "778.jpg") == PatientIdentity("778", None, None)


def test_a_person_name_is_taken_as_given_without_guessing_components() -> None:
    pattern = re.compile(r"^(?P<patient_id>\d+) (?P<patient_name>.+)\.jpg$")
    assert identity_from_filename(pattern, "1 Doe_Jane.jpg").patient_name == "Doe_Jane"
    assert identity_from_filename(pattern, "1 Doe Jane.jpg").patient_name == "Doe Jane"
    assert identity_from_filename(pattern, "1 Doe^Jane^^Dr.jpg").patient_name == "Doe^Jane^^Dr"


def test_values_at_the_dicom_limits_are_taken() -> None:
    name = "N" * 64 + "=" + "I" * 64 + "=" + "P" * 56 + "^a^b^c^d"
    identity = identity_from_filename(PATTERN, f"{'9' * 64}_{name}_{'A' * 16}.jpg")
    assert identity == PatientIdentity("9" * 64, name, "A" * 16)


@pytest.mark.parametrize(
    "filename",
    [
        pytest.param(f"{'9' * 65}_Doe^Jane_A1.jpg", id="patient-id-over-64"),
        pytest.param(f"1_Doe^Jane_{'A' * 17}.jpg", id="accession-over-16"),
        pytest.param(f"1_{'D' * 65}_A1.jpg", id="name-group-over-64"),
        pytest.param("1_a^b^c^d^e^f_A1.jpg", id="name-six-components"),
        pytest.param("1_a=b=c=d_A1.jpg", id="name-four-groups"),
        pytest.param("12\t3_Doe^Jane_A1.jpg", id="tab-in-id"),
        pytest.param("123\t_Doe^Jane_A1.jpg", id="tab-at-edge-is-not-stripped"),
        pytest.param("12\x1b3_Doe^Jane_A1.jpg", id="escape-in-id"),
        pytest.param("123_Doe\x00^Jane_A1.jpg", id="nul-in-name"),
        pytest.param("12\u200b3_Doe^Jane_A1.jpg", id="zero-width-space"),
        pytest.param("123_Doe^Jane_A\u202e1.jpg", id="bidi-override"),
        pytest.param("12\\3_Doe^Jane_A1.jpg", id="backslash-value-separator"),
        pytest.param("123_Doe^Jane_A1\x7f.jpg", id="delete-char"),
    ],
)
def test_an_invalid_value_makes_the_whole_identity_unknown_not_truncated(filename: str) -> None:
    assert identity_from_filename(PATTERN, filename) == UNKNOWN


def test_decomposed_unicode_is_normalised_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Müller^Zoë")
    identity = identity_from_filename(PATTERN, f"7_{decomposed}_X.jpg")
    assert identity.patient_name == "Müller^Zoë"
    assert identity.patient_name == unicodedata.normalize("NFC", identity.patient_name)


def test_a_refused_value_is_reported_with_what_was_wrong_and_the_valid_ones_kept_as_a_hint() -> (
    None
):
    found = read_filename_identity(PATTERN, f"P501_{'L' * 70}_ACC-9.bmp")
    assert found.identity == UNKNOWN  # one broken value: nothing is used for binding
    assert found.problems == ("patient name from file name is 70 characters, DICOM allows 64",)
    assert found.note == "patient name from file name is 70 characters, DICOM allows 64"
    assert found.hint == PatientIdentity("P501", None, "ACC-9")
    assert "P501" not in (found.note or "")  # the note goes into logged hold reasons


ID_TOO_LONG = "patient ID from file name is 65 characters, DICOM allows 64"
ACC_TOO_LONG = "accession number from file name is 17 characters, DICOM allows 16"
BACKSLASH = "patient name from file name holds a backslash (the DICOM value separator)"
INVISIBLE = "patient name from file name holds a control or invisible character"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (f"{'9' * 65}_Doe_A.jpg", ID_TOO_LONG),
        ("1_Doe_" + "A" * 17 + ".jpg", ACC_TOO_LONG),
        ("1_Doe\\Roe_A.jpg", BACKSLASH),
        ("1_Doe\u200bX_A.jpg", INVISIBLE),
        ("1_a^b^c^d^e^f_A.jpg", "patient name from file name has 6 components, DICOM allows 5"),
        ("1_a=b=c=d_A.jpg", "patient name from file name has 4 component groups, DICOM allows 3"),
    ],
)
def test_each_kind_of_refusal_names_its_field_and_its_rule(name: str, problem: str) -> None:
    found = read_filename_identity(PATTERN, name)
    assert (found.identity, found.problems) == (UNKNOWN, (problem,))


def test_a_file_name_that_is_not_utf8_is_refused_as_such_and_does_not_crash() -> None:
    name = os.fsdecode(b"P7_M\xfcller_A1.jpg")  # what os.listdir gives for a Latin-1 name
    found = read_filename_identity(PATTERN, name)
    assert found.identity == UNKNOWN
    assert found.problems == ("patient name from file name holds bytes that are not UTF-8",)
    assert found.hint == PatientIdentity("P7", None, "A1")


def test_a_usable_identity_has_no_problems_and_no_hint() -> None:
    found = read_filename_identity(PATTERN, "12345_Doe^Jane_ACC-77.jpg")
    assert found.identity == PatientIdentity("12345", "Doe^Jane", "ACC-77")
    assert (found.problems, found.note, found.hint) == ((), None, UNKNOWN)
