from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.convert.grouping import SCHEMA_VERSION, StudyGrouper
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
    a = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    b = grouper.assign("scope", JANE, T0 + 600, "sha-b", modality="OT")
    c = grouper.assign(
        "scope", JANE, T0 + 600 + WINDOW, "sha-c", modality="OT"
    )  # window counts from the last
    assert a.study_instance_uid == b.study_instance_uid == c.study_instance_uid
    assert a.series_instance_uid == b.series_instance_uid
    assert [a.instance_number, b.instance_number, c.instance_number] == [1, 2, 3]
    assert b.study_time == T0
    assert is_valid_uid(a.study_instance_uid)
    assert is_valid_uid(a.series_instance_uid)
    assert a.study_instance_uid != a.series_instance_uid


def test_a_gap_longer_than_the_window_starts_a_new_study(grouper: StudyGrouper) -> None:
    a = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    b = grouper.assign("scope", JANE, T0 + WINDOW + 1, "sha-b", modality="OT")
    assert a.study_instance_uid != b.study_instance_uid
    assert a.study_id != b.study_id
    assert b.instance_number == 1
    assert b.study_time == T0 + WINDOW + 1


def test_an_accession_number_holds_its_files_together_whatever_the_time(
    grouper: StudyGrouper,
) -> None:
    ordered = PatientIdentity(patient_id="P1", accession_number="ACC7")
    a = grouper.assign("scope", ordered, T0, "sha-a", modality="OT")
    b = grouper.assign("scope", ordered, T0 + 10 * WINDOW, "sha-b", modality="OT")
    plain = grouper.assign("scope", JANE, T0 + 1, "sha-c", modality="OT")
    assert a.study_instance_uid == b.study_instance_uid
    assert plain.study_instance_uid != a.study_instance_uid


def test_patients_and_sources_do_not_share_studies(grouper: StudyGrouper) -> None:
    jane = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    john = grouper.assign("scope", JOHN, T0 + 1, "sha-b", modality="OT")
    other_source = grouper.assign("printer", JANE, T0 + 2, "sha-c", modality="OT")
    assert (
        len({jane.study_instance_uid, john.study_instance_uid, other_source.study_instance_uid})
        == 3
    )


def test_the_same_file_again_gets_the_same_assignment(grouper: StudyGrouper) -> None:
    first = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    grouper.assign("scope", JANE, T0 + 10, "sha-b", modality="OT")
    again = grouper.assign("scope", JANE, T0 + 5000, "sha-a", modality="OT")
    assert again == first
    after = grouper.assign("scope", JANE, T0 + 20, "sha-c", modality="OT")
    assert after.instance_number == 3  # the resend took no number


def test_same_bytes_for_another_patient_are_not_filed_with_the_first(
    grouper: StudyGrouper,
) -> None:
    jane = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    john = grouper.assign("scope", JOHN, T0, "sha-a", modality="OT")
    assert john.study_instance_uid != jane.study_instance_uid


def test_a_late_file_from_before_the_study_joins_it(grouper: StudyGrouper) -> None:
    a = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    earlier = grouper.assign("scope", JANE, T0 - 60, "sha-b", modality="OT")
    assert earlier.study_instance_uid == a.study_instance_uid
    assert earlier.study_time == T0  # the study's time stays what was already sent


def test_grouping_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    first = StudyGrouper(path, WINDOW, UidFactory("1.2.3"))
    first.open()
    a = first.assign("scope", JANE, T0, "sha-a", modality="OT")
    first.close()
    second = StudyGrouper(path, WINDOW, UidFactory("1.2.3"))
    second.open()
    try:
        assert second.assign("scope", JANE, T0, "sha-a", modality="OT") == a
        b = second.assign("scope", JANE, T0 + 100, "sha-b", modality="OT")
        assert b.study_instance_uid == a.study_instance_uid
        assert b.instance_number == 2
    finally:
        second.close()


def test_uids_are_derived_not_random(tmp_path: Path) -> None:
    results = []
    for name in ("one.sqlite", "two.sqlite"):
        g = StudyGrouper(tmp_path / name, WINDOW, UidFactory("1.2.3"))
        g.open()
        results.append(g.assign("scope", JANE, T0, "sha-a", modality="OT"))
        g.close()
    assert results[0] == results[1]


def test_no_patient_data_is_stored(tmp_path: Path, grouper: StudyGrouper) -> None:
    grouper.assign(
        "scope", PatientIdentity("SECRET-ID", "Secret^Name", "SECRET-ACC"), T0, "s", modality="OT"
    )
    grouper.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("g.sqlite*"))
    assert b"SECRET" not in stored
    grouper.open()


def test_concurrent_assignments_get_distinct_instance_numbers(grouper: StudyGrouper) -> None:
    numbers: list[int] = []
    lock = threading.Lock()

    def work(start: int) -> None:
        for i in range(start, start + 20):
            a = grouper.assign("scope", JANE, T0 + i, f"sha-{i}", modality="OT")
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
        g.assign("scope", JANE, T0, "x", modality="OT")


def test_each_modality_of_a_study_gets_its_own_series(grouper: StudyGrouper) -> None:
    image = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    report = grouper.assign("scope", JANE, T0 + 60, "sha-b", modality="DOC")
    image2 = grouper.assign("scope", JANE, T0 + 120, "sha-c", modality="OT")
    assert image.study_instance_uid == report.study_instance_uid == image2.study_instance_uid
    assert image.series_instance_uid == image2.series_instance_uid != report.series_instance_uid
    assert [(a.series_number, a.instance_number) for a in (image, report, image2)] == [
        (1, 1),
        (2, 1),
        (1, 2),
    ]
    assert image.study_id == report.study_id
    assert is_valid_uid(report.series_instance_uid)


def test_the_window_spans_every_series_of_the_study(grouper: StudyGrouper) -> None:
    image = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    report = grouper.assign("scope", JANE, T0 + WINDOW - 1, "sha-b", modality="DOC")
    # Within the window of the report, though not of the image: still the same study.
    late = grouper.assign("scope", JANE, T0 + 2 * WINDOW - 2, "sha-c", modality="OT")
    assert late.study_instance_uid == image.study_instance_uid == report.study_instance_uid
    assert late.series_instance_uid == image.series_instance_uid


def test_a_series_of_another_modality_keeps_the_studys_time(grouper: StudyGrouper) -> None:
    image = grouper.assign("scope", JANE, T0, "sha-a", modality="OT")
    earlier_report = grouper.assign("scope", JANE, T0 - 60, "sha-b", modality="DOC")
    assert earlier_report.study_time == image.study_time == T0


def test_a_step_without_study_uid_keeps_one_study_for_every_modality_and_session(
    grouper: StudyGrouper,
) -> None:
    first = grouper.assign("scope", JANE, T0, "sha-a", modality="OT", order_key="step-1")
    report = grouper.assign("scope", JANE, T0 + 1, "sha-b", modality="DOC", order_key="step-1")
    later = grouper.assign(
        "scope", JANE, T0 + 3 * WINDOW, "sha-c", modality="OT", order_key="step-1"
    )
    assert first.study_instance_uid == report.study_instance_uid == later.study_instance_uid
    assert len({a.series_instance_uid for a in (first, report, later)}) == 3
    assert [a.series_number for a in (first, report, later)] == [1, 2, 3]


def test_a_modality_is_required(grouper: StudyGrouper) -> None:
    with pytest.raises(ValueError, match="modality"):
        grouper.assign("scope", JANE, T0, "sha-a", modality="")


SCHEMA_1_COLUMNS = [
    "id",
    "key_hash",
    "by_accession",
    "study_uid",
    "series_uid",
    "started_at",
    "first_at",
    "last_at",
    "instances",
]


def test_a_database_of_schema_1_is_migrated_and_keeps_its_assignments(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    old = StudyGrouper(path, WINDOW, UidFactory("1.2.3"))
    old.open()
    image = old.assign("scope", JANE, T0, "sha-a", modality="OT")
    old.close()
    # Turn it into what a box running schema 1 holds: no modality column, user_version 0.
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE studies DROP COLUMN modality")
        db.execute("PRAGMA user_version = 0")
        assert [r[1] for r in db.execute("PRAGMA table_info(studies)")] == SCHEMA_1_COLUMNS
    db.close()

    grouper = StudyGrouper(path, WINDOW, UidFactory("1.2.3"))
    grouper.open()
    try:
        assert grouper.assign("scope", JANE, T0, "sha-a", modality="OT") == image  # a resend
        # The old series' modality is unknown: new files open series of their own, same study.
        report = grouper.assign("scope", JANE, T0 + 60, "sha-b", modality="DOC")
        image2 = grouper.assign("scope", JANE, T0 + 120, "sha-c", modality="OT")
        image3 = grouper.assign("scope", JANE, T0 + 180, "sha-d", modality="OT")
    finally:
        grouper.close()
    assert report.study_instance_uid == image2.study_instance_uid == image.study_instance_uid
    assert (
        len({image.series_instance_uid, report.series_instance_uid, image2.series_instance_uid})
        == 3
    )
    assert image3.series_instance_uid == image2.series_instance_uid
    assert [a.series_number for a in (image, report, image2)] == [1, 2, 3]
    assert report.study_id == image.study_id and report.study_time == image.study_time
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert "modality" in [r[1] for r in db.execute("PRAGMA table_info(studies)")]
    db.close()
