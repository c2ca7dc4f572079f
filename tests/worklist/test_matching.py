"""DICOM C-FIND matching rules (PS3.4 C.2.2.2): examples, then properties with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.worklist.matching import (
    QueryError,
    build_response,
    compile_query,
    matches,
    record_from_json,
    to_record,
)
from tests.worklist.factory import mwl_dataset


def query(**keys: object) -> Dataset:
    ds = Dataset()
    # Queries may be malformed on purpose: pydicom must not warn while we build them.
    with config.disable_value_validation():
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
    return ds


def step_query(**keys: object) -> Dataset:
    return query(ScheduledProcedureStepSequence=Sequence([query(**keys)]))


ITEM = mwl_dataset(patient_name="Müller^Anna", start_date="20240105", start_time="093000")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"PatientName": ""}, True),  # universal
        ({"PatientID": "PID001"}, True),
        ({"PatientID": "PID00"}, False),
        ({"PatientID": "pid001"}, False),  # case-sensitive outside PN
        ({"PatientName": "müller^anna"}, True),  # PN case-insensitive
        ({"PatientName": "Mü*"}, True),
        ({"PatientName": "m?ller^*"}, True),
        ({"PatientName": "M?ller"}, False),
        ({"AccessionNumber": "ACC*"}, True),
        ({"AccessionNumber": "*1"}, True),
        ({"AccessionNumber": "acc*"}, False),
        ({"AccessionNumber": "A?C001"}, True),
        ({"AccessionNumber": "A?C00"}, False),
        ({"StudyInstanceUID": "1.2\\1.2.826.0.1.3680043.10.1.1"}, True),  # list of UIDs
        ({"StudyInstanceUID": "1.2.826.0.1.3680043.10.1.*"}, False),  # no wildcard in UI
        ({"IssuerOfPatientID": "X"}, False),  # requested with a value, item lacks it
        ({"IssuerOfPatientID": ""}, True),
        ({"PatientSex": "F\\O"}, True),
    ],
)
def test_top_level_keys(keys: dict[str, object], expected: bool):
    assert matches(query(**keys), ITEM) is expected


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"ScheduledProcedureStepStartDate": "20240105"}, True),
        ({"ScheduledProcedureStepStartDate": "20240104"}, False),
        ({"ScheduledProcedureStepStartDate": "20240101-20240131"}, True),
        ({"ScheduledProcedureStepStartDate": "20240106-20240131"}, False),
        ({"ScheduledProcedureStepStartDate": "-20240105"}, True),
        ({"ScheduledProcedureStepStartDate": "20240105-"}, True),
        ({"ScheduledProcedureStepStartDate": "20240106-"}, False),
        ({"ScheduledProcedureStepStartTime": "0900-1000"}, True),
        ({"ScheduledProcedureStepStartTime": "-09"}, True),  # partial upper bound: all of 09
        ({"ScheduledProcedureStepStartTime": "0931-"}, False),
        ({"ScheduledProcedureStepStartTime": "093000"}, True),
        ({"Modality": "US", "ScheduledStationAETitle": "EDGE_GW"}, True),
        ({"Modality": "US", "ScheduledStationAETitle": "OTHER"}, False),  # all keys of one item
        ({"Modality": "", "ScheduledStationAETitle": ""}, True),
        ({"ScheduledStationAETitle": "EDGE*"}, True),
    ],
)
def test_keys_inside_the_scheduled_procedure_step_sequence(keys: dict[str, object], expected: bool):
    assert matches(step_query(**keys), ITEM) is expected


def test_a_sequence_matches_when_any_item_matches_all_its_keys():
    ds = mwl_dataset(modality="CT")
    second = Dataset()
    second.Modality = "US"
    second.ScheduledStationAETitle = "ROOM2"
    ds.ScheduledProcedureStepSequence.append(second)
    assert matches(step_query(Modality="US", ScheduledStationAETitle="ROOM2"), ds)
    assert not matches(step_query(Modality="CT", ScheduledStationAETitle="ROOM2"), ds)


def test_an_empty_sequence_key_is_universal_even_when_the_item_lacks_the_sequence():
    ds = mwl_dataset()
    del ds.ScheduledProcedureStepSequence
    assert matches(query(ScheduledProcedureStepSequence=Sequence([])), ds)
    assert not matches(step_query(Modality="US"), ds)


@pytest.mark.parametrize(
    "bad",
    ["2024-01-05", "-", "2024x-2025", "a-b"],
)
def test_malformed_date_ranges_are_query_errors(bad: str):
    with pytest.raises(QueryError):
        compile_query(step_query(ScheduledProcedureStepStartDate=bad))


def test_a_sequence_key_with_two_items_is_a_query_error():
    q = query(ScheduledProcedureStepSequence=Sequence([Dataset(), Dataset()]))
    with pytest.raises(QueryError):
        compile_query(q)


def test_datetime_ranges_with_offsets():
    ds = query(AcquisitionDateTime="20240105093000")
    assert matches(query(AcquisitionDateTime="20240105-20240106"), ds)
    assert matches(query(AcquisitionDateTime="20240105000000+0100-20240105120000+0100"), ds)
    assert not matches(query(AcquisitionDateTime="20240106-"), ds)


def test_response_holds_exactly_the_requested_keys_with_empties_for_missing_ones():
    q = query(
        SpecificCharacterSet="ISO_IR 192",
        PatientName="",
        PatientID="PID001",
        IssuerOfPatientID="",
        ScheduledProcedureStepSequence=Sequence(
            [query(Modality="US", ScheduledProcedureStepID="", ScheduledStationName="")]
        ),
    )
    response = build_response(q, ITEM)
    assert [e.keyword for e in response] == [
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "ScheduledProcedureStepSequence",
    ]
    assert response.PatientName == "Müller^Anna"
    assert response.IssuerOfPatientID in ("", None)
    (step,) = response.ScheduledProcedureStepSequence
    assert [e.keyword for e in step] == [
        "Modality",
        "ScheduledProcedureStepID",
        "ScheduledStationName",
    ]
    assert step.ScheduledProcedureStepID == "SPS001"


def test_response_returns_only_matching_sequence_items_and_all_for_a_universal_one():
    ds = mwl_dataset(modality="CT")
    second = Dataset()
    second.Modality = "US"
    ds.ScheduledProcedureStepSequence.append(second)
    narrowed = build_response(step_query(Modality="US"), ds)
    assert [i.Modality for i in narrowed.ScheduledProcedureStepSequence] == ["US"]
    whole = build_response(query(ScheduledProcedureStepSequence=Sequence([])), ds)
    assert len(whole.ScheduledProcedureStepSequence) == 2
    assert whole.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "SPS001"


# --- properties --------------------------------------------------------------------------

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\*?^= "),
    min_size=1,
    max_size=12,
)
DATES = st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}")


def reference_wildcard(pattern: str, value: str) -> bool:
    """Slow, obviously correct recursive * / ? matcher."""
    if not pattern:
        return not value
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return any(reference_wildcard(rest, value[i:]) for i in range(len(value) + 1))
    if not value:
        return False
    return (head == "?" or head == value[0]) and reference_wildcard(rest, value[1:])


@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab", max_size=8))
def test_wildcards_agree_with_a_reference_matcher(pattern: str, value: str):
    if not pattern.strip():
        return  # universal, covered elsewhere
    got = matches(query(AccessionNumber=pattern), query(AccessionNumber=value))
    assert got == reference_wildcard(pattern, value)


@given(TEXT, TEXT, DATES)
def test_an_item_matches_the_query_made_of_its_own_values(pid: str, acc: str, date: str):
    ds = mwl_dataset(patient_id=pid, accession_number=acc, start_date=date)
    assert matches(query(PatientID=pid, AccessionNumber=acc), ds)
    assert matches(step_query(ScheduledProcedureStepStartDate=date), ds)


@given(TEXT, TEXT)
def test_universal_keys_match_anything(pid: str, name: str):
    ds = mwl_dataset(patient_id=pid, patient_name=name)
    q = query(
        PatientID="",
        PatientName="",
        AccessionNumber="",
        ScheduledProcedureStepSequence=Sequence([query(Modality="")]),
    )
    assert matches(q, ds)


@given(DATES, DATES, DATES)
def test_date_ranges_are_inclusive_intervals(a: str, b: str, value: str):
    low, high = sorted((a, b))
    ds = mwl_dataset(start_date=value)
    assert matches(step_query(ScheduledProcedureStepStartDate=f"{low}-{high}"), ds) == (
        low <= value <= high
    )
    assert matches(step_query(ScheduledProcedureStepStartDate=f"-{high}"), ds) == (value <= high)
    assert matches(step_query(ScheduledProcedureStepStartDate=f"{low}-"), ds) == (low <= value)


@given(
    st.lists(
        st.sampled_from(
            [
                "PatientName",
                "PatientID",
                "AccessionNumber",
                "PatientSex",
                "IssuerOfPatientID",
                "OtherPatientIDs",
            ]
        ),
        unique=True,
    )
)
def test_response_keys_are_exactly_the_query_keys(keywords: list[str]):
    q = query(**dict.fromkeys(keywords, ""))
    response = build_response(q, ITEM)
    assert sorted(e.keyword for e in response) == sorted(keywords)


@given(TEXT)
def test_pn_matching_ignores_case_and_other_strings_do_not(name: str):
    ds = query(PatientName=name, PatientID=name)
    assert matches(query(PatientName=name.swapcase()), ds) == (
        name.swapcase().casefold() == name.casefold()
    )
    assert matches(query(PatientID=name.swapcase()), ds) == (name.swapcase() == name)


def test_records_flatten_sequences_and_multivalues():
    record = to_record(
        query(
            OtherPatientIDs=["A", "B"],
            ScheduledProcedureStepSequence=Sequence([query(Modality="US")]),
        )
    )
    assert record[0x00101000] == "A\\B"
    assert record[0x00400100] == [{0x00080060: "US"}]


@given(TEXT, TEXT, DATES, st.sampled_from(["Doe^Jane", "Yamada^Tarou=山田^太郎", "Müller"]))
def test_records_from_json_equal_records_from_datasets(pid: str, acc: str, date: str, name: str):
    ds = mwl_dataset(patient_id=pid, accession_number=acc, start_date=date, patient_name=name)
    ds.OtherPatientIDs = ["A", "B"]
    ds.PatientWeight = "70.5"
    assert record_from_json(ds.to_json_dict()) == to_record(ds)
