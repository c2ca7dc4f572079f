from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.convert.grouping import StudyGrouper
from gateway.convert.uids import UidFactory, is_valid_uid
from gateway.identity import PatientIdentity

T0 = 1_700_000_000.0
WINDOW = 1800.0
JANE = PatientIdentity(patient_id="P1", patient_name="Doe^Jane")
JOHN = PatientIdentity(patient_id="P2", patient_name="Doe^John")


@pytest.fixture
def grouper(tmp_path: Path) -> Iterator[StudyGrouper]:
    g = StudyGrouper(tmp_path / "g.sqlite", WINDOW, UidFactory("1.2.3"))
    g.open()
    yield g
    g.close()


def test_files_within_the_window_form_one_study_and_series(grouper: StudyGrouper) -> None:
    a = grouper.assign("scope", JANE, T0, "sha-a")
    b = grouper.assign("scope", JANE, T0 + 600, "sha-b")
    c = grouper.assign("scope", JANE, T0 + 600 + WINDOW, "sha-c")  # window counts from the last
    assert a.study_instance_uid == b.study_instance_uid == c.study_instance_uid
    assert a.series_instance_uid == b.series_instance_uid
    assert [a.instance_number, b.instance_number, c.instance_number] == [1, 2, 3]
    assert b.study_time == T0
    assert is_valid_uid(a.study_instance_uid)
    assert is_valid_uid(a.series_instance_uid)
    assert a.study_instance_uid != a.series_instance_uid


def test_a_gap_longer_than_the_window_starts_a_new_study(grouper: StudyGrouper) -> None:
    a = grouper.assign("scope", JANE, T0, "sha-a")
    b = grouper.assign("scope", JANE, T0 + WINDOW + 1, "sha-b")
    assert a.study_instance_uid != b.study_instance_uid
    assert a.study_id != b.study_id
    assert b.instance_number == 1
    assert b.study_time == T0 + WINDOW + 1


def test_an_accession_number_holds_its_files_together_whatever_the_time(
    grouper: StudyGrouper,
) -> None:
    ordered = PatientIdentity(patient_id="P1", accession_number="ACC7")
    a = grouper.assign("scope", ordered, T0, "sha-a")
    b = grouper.assign("scope", ordered, T0 + 10 * WINDOW, "sha-b")
    plain = grouper.assign("scope", JANE, T0 + 1, "sha-c")
    assert a.study_instance_uid == b.study_instance_uid
    assert plain.study_instance_uid != a.study_instance_uid


def test_patients_and_sources_do_not_share_studies(grouper: StudyGrouper) -> None:
    jane = grouper.assign("scope", JANE, T0, "sha-a")
    john = grouper.assign("scope", JOHN, T0 + 1, "sha-b")
    other_source = grouper.assign("printer", JANE, T0 + 2, "sha-c")
    assert (
        len({jane.study_instance_uid, john.study_instance_uid, other_source.study_instance_uid})
        == 3
    )


def test_the_same_file_again_gets_the_same_assignment(grouper: StudyGrouper) -> None:
    first = grouper.assign("scope", JANE, T0, "sha-a")
    grouper.assign("scope", JANE, T0 + 10, "sha-b")
    again = grouper.assign("scope", JANE, T0 + 5000, "sha-a")
    assert again == first
    after = grouper.assign("scope", JANE, T0 + 20, "sha-c")
    assert after.instance_number == 3  # the resend took no number


def test_same_bytes_for_another_patient_are_not_filed_with_the_first(
    grouper: StudyGrouper,
) -> None:
    jane = grouper.assign("scope", JANE, T0, "sha-a")
    john = grouper.assign("scope", JOHN, T0, "sha-a")
    assert john.study_instance_uid != jane.study_instance_uid


def test_a_late_file_from_before_the_study_joins_it(grouper: StudyGrouper) -> None:
    a = grouper.assign("scope", JANE, T0, "sha-a")
    earlier = grouper.assign("scope", JANE, T0 - 60, "sha-b")
    assert earlier.study_instance_uid == a.study_instance_uid
    assert earlier.study_time == T0  # the study's time stays what was already sent


def test_grouping_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    first = StudyGrouper(path, WINDOW, UidFactory("1.2.3"))
    first.open()
    a = first.assign("scope", JANE, T0, "sha-a")
    first.close()
    second = StudyGrouper(path, WINDOW, UidFactory("1.2.3"))
    second.open()
    try:
        assert second.assign("scope", JANE, T0, "sha-a") == a
        b = second.assign("scope", JANE, T0 + 100, "sha-b")
        assert b.study_instance_uid == a.study_instance_uid
        assert b.instance_number == 2
    finally:
        second.close()


def test_uids_are_derived_not_random(tmp_path: Path) -> None:
    results = []
    for name in ("one.sqlite", "two.sqlite"):
        g = StudyGrouper(tmp_path / name, WINDOW, UidFactory("1.2.3"))
        g.open()
        results.append(g.assign("scope", JANE, T0, "sha-a"))
        g.close()
    assert results[0] == results[1]


def test_no_patient_data_is_stored(tmp_path: Path, grouper: StudyGrouper) -> None:
    grouper.assign("scope", PatientIdentity("SECRET-ID", "Secret^Name", "SECRET-ACC"), T0, "s")
    grouper.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("g.sqlite*"))
    assert b"SECRET" not in stored
    grouper.open()


def test_concurrent_assignments_get_distinct_instance_numbers(grouper: StudyGrouper) -> None:
    numbers: list[int] = []
    lock = threading.Lock()

    def work(start: int) -> None:
        for i in range(start, start + 20):
            a = grouper.assign("scope", JANE, T0 + i, f"sha-{i}")
            with lock:
                numbers.append(a.instance_number)

    threads = [threading.Thread(target=work, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 81))


def test_use_before_open_is_a_programming_error(tmp_path: Path) -> None:
    g = StudyGrouper(tmp_path / "g.sqlite", WINDOW, UidFactory(None))
    with pytest.raises(RuntimeError):
        g.assign("scope", JANE, T0, "x")
