"""Intake with binding and sidecars: real converter, queue and quarantine on tmp paths."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.clock import FakeClock
from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.uids import UidFactory
from gateway.ingest.intake import Intake
from gateway.ingest.quarantine import Quarantine
from gateway.spool.entries import DeliveryState
from gateway.spool.store import Spool
from gateway.worklist.binding import Binder
from tests.convert.builders import gray_image
from tests.convert.conftest import make_settings
from tests.worklist.factory import make_item
from tests.worklist.test_binding import FakeLookup, FakeSelection

PATTERN = re.compile(r"^(?P<accession_number>[A-Z0-9]+)_")
JANE = make_item(patient_id="P-JANE", accession_number="ACC1", step_id="S1")
JOHN = make_item(
    patient_id="P-JOHN", accession_number="ACC3", step_id="S3", study_instance_uid="1.2.3.3"
)
SETTLE = 2.0


@dataclass
class Rig:
    drop: Path
    clock: FakeClock
    spool: Spool
    quarantine: Quarantine
    grouper: StudyGrouper
    converter: Converter
    selection: FakeSelection

    def intake(self, *, require_match: bool = True, worklist: bool = True) -> Intake:
        binder = Binder(
            FakeLookup([JANE, JOHN]) if worklist else None, self.selection, require_match
        )
        return Intake(
            source="scope",
            pattern=PATTERN,
            converter=self.converter,
            spool=self.spool,
            quarantine=self.quarantine,
            clock=self.clock,
            logger=logging.getLogger("test.intake"),
            binder=binder,
            sidecar_settle_seconds=SETTLE,
        )

    def drop_png(self, name: str) -> Path:
        path = self.drop / name
        gray_image().save(path)
        return path

    def sidecar(self, name: str, text: str, *, age: float = 60.0) -> Path:
        path = self.drop / name
        path.write_text(text, "utf-8")
        stamp = self.clock.now() - age  # written that long ago by the device
        os.utime(path, (stamp, stamp))
        return path

    def only_object(self) -> tuple[pydicom.Dataset, str | None]:
        rows = self.spool.list_deliveries(None, None, 10)
        assert len(rows) == 1, rows
        info = self.spool.show(rows[0].object_id)
        assert info is not None
        assert info.payload is not None
        return pydicom.dcmread(info.payload), info.held_reason

    def quarantined(self) -> list[tuple[str, str]]:
        return sorted((q.path.name, q.reason) for q in self.quarantine.list())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = FakeClock(start=1_767_000_000.0)
    drop = tmp_path / "drop"
    drop.mkdir()
    settings = make_settings()
    uids = UidFactory(settings.uid_root)
    grouper = StudyGrouper(tmp_path / "grouping.sqlite", 1800, uids)
    grouper.open()
    spool = Spool(tmp_path / "state", ["pacs"], 1 << 30, clock)
    spool.open()
    quarantine = Quarantine(tmp_path / "quarantine", clock)
    yield Rig(
        drop,
        clock,
        spool,
        quarantine,
        grouper,
        Converter(settings, grouper, uids),
        FakeSelection(),
    )
    spool.close()
    grouper.close()


def test_file_bound_by_its_name_is_queued_with_the_step_and_ready_to_send(rig: Rig) -> None:
    path = rig.drop_png("ACC3_scan.png")
    assert rig.intake()(path) is True
    ds, held = rig.only_object()
    assert held is None
    assert (ds.PatientID, ds.AccessionNumber, ds.StudyInstanceUID) == ("P-JOHN", "ACC3", "1.2.3.3")
    assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "S3"
    rows = rig.spool.list_deliveries(None, None, 10)
    assert rows[0].state == DeliveryState.PENDING
    assert not path.exists()


def test_file_with_no_match_is_queued_held_with_the_reason(rig: Rig) -> None:
    rig.intake()(rig.drop_png("ACC9_scan.png"))
    _, held = rig.only_object()
    assert held is not None
    assert held.startswith("no worklist match")
    assert rig.spool.list_deliveries(None, None, 10)[0].state == DeliveryState.HELD


def test_selected_procedure_binds_a_file_without_identifiers(rig: Rig) -> None:
    rig.selection.selected = JANE
    rig.intake()(rig.drop_png("scan.png"))
    ds, held = rig.only_object()
    assert (held, ds.PatientID) == (None, "P-JANE")


def test_sidecar_binds_and_is_removed_after_queueing(rig: Rig) -> None:
    path = rig.drop_png("scan.png")
    side = rig.sidecar("scan.png.json", json.dumps({"accession_number": "ACC1"}))
    assert rig.intake()(path) is True
    ds, held = rig.only_object()
    assert (held, ds.PatientID) == (None, "P-JANE")
    assert not side.exists()
    assert not path.exists()


def test_meta_sidecar_gives_the_identity_without_a_worklist(rig: Rig) -> None:
    path = rig.drop_png("scan.png")
    rig.sidecar("scan.png.meta", "# from the device\npatient_id = P-NEW\nsex = O\n")
    rig.intake(worklist=False)(path)
    ds, held = rig.only_object()
    assert (held, ds.PatientID, ds.PatientSex) == (None, "P-NEW", "O")


def test_file_waits_while_its_sidecar_is_still_being_written(rig: Rig) -> None:
    path = rig.drop_png("scan.png")
    side = rig.sidecar("scan.png.json", '{"accession_number": "ACC1"}', age=0.0)
    intake = rig.intake()
    assert intake(path) is False  # just written: the file waits
    rig.clock.advance(SETTLE / 2)
    assert intake(path) is False
    rig.clock.advance(SETTLE)
    assert intake(path) is True  # unchanged for the settle time
    ds, _ = rig.only_object()
    assert ds.PatientID == "P-JANE"
    assert not side.exists()


def test_malformed_sidecar_holds_the_object_and_keeps_the_sidecar_in_quarantine(
    rig: Rig,
) -> None:
    path = rig.drop_png("ACC1_scan.png")
    rig.sidecar("ACC1_scan.png.meta", "patient_id P-JANE\n")
    assert rig.intake()(path) is True
    _, held = rig.only_object()
    assert held == "sidecar malformed: sidecar line 1 is not key = value"
    [(name, reason)] = rig.quarantined()
    assert name.endswith("ACC1_scan.png.meta")
    assert reason.startswith("malformed sidecar (sidecar line 1 is not key = value)")
    assert list(rig.drop.iterdir()) == []


def test_quarantined_file_takes_its_sidecar_along(rig: Rig) -> None:
    path = rig.drop / "ACC1_noise.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    rig.sidecar("ACC1_noise.png.json", '{"patient_id": "P-JANE"}')
    assert rig.intake()(path) is True
    quarantined = rig.quarantined()
    assert len(quarantined) == 2
    names = [name for name, _ in quarantined]
    assert any(n.endswith("ACC1_noise.png") for n in names)
    side_reason = next(r for n, r in quarantined if n.endswith(".json"))
    assert side_reason.startswith("sidecar of quarantined file ")
    assert list(rig.drop.iterdir()) == []
    assert rig.spool.list_deliveries(None, None, 10) == []


def test_same_drop_re_ingested_after_a_crash_is_the_same_object(rig: Rig) -> None:
    path = rig.drop_png("ACC3_scan.png")
    data = path.read_bytes()
    stat = path.stat()
    rig.intake()(path)
    path.write_bytes(data)  # the crash came before the source was removed
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    intake = rig.intake()
    assert intake(path) is True
    assert intake.counts["duplicate"] == 1
    assert len(rig.spool.list_deliveries(None, None, 10)) == 1


def test_without_a_binder_intake_keeps_the_file_name_rules(rig: Rig) -> None:
    intake = Intake(
        source="scope",
        pattern=re.compile(r"^(?P<patient_id>[^_]+)_"),
        converter=rig.converter,
        spool=rig.spool,
        quarantine=rig.quarantine,
        clock=rig.clock,
        logger=logging.getLogger("test.intake"),
    )
    intake(rig.drop_png("P-77_scan.png"))
    ds, held = rig.only_object()
    assert (held, ds.PatientID) == (None, "P-77")


def test_a_grouping_database_that_cannot_commit_keeps_the_file_and_logs_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10 B11: the box's storage failing is never the file's fault."""
    path = rig.drop_png("ACC3_scan.png")
    writable = rig.grouper._db  # swapped for a read-only view of the same file, then back
    rig.grouper._db = sqlite3.connect(
        f"file:{rig.grouper.db_path}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    intake = rig.intake()
    with caplog.at_level(logging.DEBUG, "test.intake"):
        for _ in range(5):  # five rescans
            assert intake(path) is False
            rig.clock.advance(3.0)
        assert path.exists() and rig.quarantined() == []
        assert rig.spool.list_deliveries(None, None, 10) == []
        rig.grouper._db.close()
        rig.grouper._db = writable
        assert intake(path) is True
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("state storage: ingest paused") == 1
    assert messages.count("queue has room: ingest resumed") == 1
    assert "converter failed" not in messages and "quarantined" not in messages
    assert not any(r.exc_info for r in caplog.records)
    assert not path.exists()


NAMED = re.compile(r"^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_")


def named_intake(rig: Rig) -> Intake:
    """Intake without a worklist, taking patient ID and name from the file name."""
    return Intake(
        source="export",
        pattern=NAMED,
        converter=rig.converter,
        spool=rig.spool,
        quarantine=rig.quarantine,
        clock=rig.clock,
        logger=logging.getLogger("test.intake"),
        root=rig.drop,
    )


def test_identical_files_whose_names_give_no_usable_identity_stay_two_objects(rig: Rig) -> None:
    intake = named_intake(rig)
    long_name = "L" * 70
    first = rig.drop_png(f"P501_{long_name}_a.png")
    data = first.read_bytes()
    assert intake(first) is True
    second = rig.drop / f"P502_{long_name}_a.png"
    second.write_bytes(data)
    assert intake(second) is True
    assert intake.counts["duplicate"] == 0
    rows = rig.spool.list_deliveries(None, None, 10)
    assert len({r.sop_instance_uid for r in rows}) == 2
    infos = [rig.spool.show(r.object_id) for r in rows]
    names, hints, reasons = set(), set(), set()
    for info in infos:
        assert info is not None
        [source] = info.sources
        assert (source.channel, source.source, source.size) == ("file", "export", len(data))
        names.add(source.file_name)
        hints.add(source.hint_patient_id)
        reasons.add(info.held_reason)
    assert names == {f"P501_{long_name}_a.png", f"P502_{long_name}_a.png"}
    assert hints == {"P501", "P502"}
    assert reasons == {
        "patient identity unknown: patient name from file name is 70 characters, DICOM allows 64"
    }


def test_a_file_in_a_subfolder_records_its_path_in_the_drop_folder(rig: Rig) -> None:
    (rig.drop / "day1").mkdir()
    path = rig.drop / "day1" / "P1_Doe_a.png"
    gray_image().save(path)
    assert named_intake(rig)(path) is True
    info = rig.spool.show(rig.spool.list_deliveries(None, None, 10)[0].object_id)
    assert info is not None and info.sources[0].file_name == "day1/P1_Doe_a.png"


def test_one_dicom_file_dropped_under_two_names_is_one_object_naming_both(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    data = Path(get_testdata_file("SC_rgb_small_odd.dcm")).read_bytes()  # pydicom's own corpus
    intake = named_intake(rig)
    for name in ("sc.dcm", "copy of sc.dcm"):
        (rig.drop / name).write_bytes(data)
        assert intake(rig.drop / name) is True
    assert intake.counts == {**intake.counts, "queued": 1, "duplicate": 1}
    rows = rig.spool.list_deliveries(None, None, 10)
    assert len(rows) == 1
    info = rig.spool.show(rows[0].object_id)
    assert info is not None
    assert [s.file_name for s in info.sources] == ["sc.dcm", "copy of sc.dcm"]
    assert "same object from another source; both sources recorded" in caplog.text
