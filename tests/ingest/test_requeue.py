"""Quarantined files put back through ingest: as they first came, and nothing lost if refused again.

Real spool, quarantine, storage receiver and audit log on tmp paths; the files are pydicom's and
the test's own writers', quarantined the way the daemon quarantines them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import SystemClock
from gateway.ingest.intake import SIDECAR_OF_QUARANTINED
from gateway.ingest.quarantine import Quarantine
from gateway.ingest.receiver import StoreReceiver, dataset_offset
from gateway.ingest.requeue import QuarantineDesk, RequeueError
from gateway.spool.entries import SourceChannel
from gateway.spool.store import Spool
from tests.convert.builders import gray_image
from tests.forward.objects import write_ct


@dataclass
class Desk:
    desk: QuarantineDesk
    quarantine: Quarantine
    spool: Spool
    drop: Path
    state: Path

    def audit(self) -> list[dict[str, object]]:
        path = self.state / AUDIT_FILE
        return [json.loads(line) for line in path.read_text().splitlines()]


def _desk(tmp_path: Path, *, max_bytes: int = 1 << 30, storage: bool = True) -> Desk:
    clock = SystemClock()
    state = tmp_path / "state"
    spool = Spool(state, ["pacs"], max_bytes, clock)
    spool.open()
    quarantine = Quarantine(state / "quarantine", clock)
    receiver = StoreReceiver(spool, quarantine, prepare=None, logger=logging.getLogger("t.rx"))
    drop = tmp_path / "drop"
    drop.mkdir()
    desk = QuarantineDesk(
        quarantine,
        folders={"export": drop},
        serial_lines=["monitor"],
        admit=receiver.admit if storage else None,
        staging_path=spool.staging_path,
        spool_root=spool.root,
        audit=AuditLog(state / AUDIT_FILE, clock),
        clock=clock,
    )
    return Desk(desk, quarantine, spool, drop, state)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Desk]:
    made = _desk(tmp_path)
    yield made
    made.spool.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_drop_folder_file_goes_back_under_its_own_name(rig: Desk) -> None:
    dropped = rig.drop / "sub" / "P1_Doe_a.png"
    dropped.parent.mkdir()
    gray_image().save(dropped)
    os.utime(dropped, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    digest = _sha(dropped)
    kept = rig.quarantine.put(dropped, "export", "no patient ID")
    [entry] = rig.desk.entries()
    assert entry.channel is SourceChannel.FILE and entry.not_requeueable is None

    result = rig.desk.requeue(entry.ident, "cli:tech")

    assert result.outcome == "returned" and result.ok
    assert _sha(dropped) == digest  # the same bytes, the same place in the drop folder
    assert dropped.stat().st_mtime_ns == 1_700_000_000_000_000_000  # dates and study grouping
    assert not kept.exists()
    assert rig.quarantine.list() == []
    assert [p.name for p in dropped.parent.iterdir()] == [dropped.name]  # no temp file left
    [line] = rig.audit()
    assert (line["actor"], line["action"], line["target"]) == (
        "cli:tech",
        "quarantine requeue",
        f"quarantine:{entry.ident}",
    )
    assert line["details"] == {"outcome": "returned", "channel": "file"}


def test_a_sidecar_goes_back_with_its_file_and_not_alone(rig: Desk) -> None:
    dropped = rig.drop / "scan.png"
    gray_image().save(dropped)
    sidecar = rig.drop / "scan.png.json"
    sidecar.write_text('{"patient_id": "P1"}')
    kept = rig.quarantine.put(dropped, "export", "not an image")
    rig.quarantine.put(sidecar, "export", f"{SIDECAR_OF_QUARANTINED}{kept.name}")
    file_entry, sidecar_entry = rig.desk.entries()
    assert sidecar_entry.not_requeueable == (
        f"a sidecar goes back with its file: requeue {file_entry.ident}"
    )
    with pytest.raises(RequeueError, match="goes back with its file"):
        rig.desk.requeue(sidecar_entry.ident, "cli:tech")

    rig.desk.requeue(file_entry.ident, "cli:tech")

    assert sidecar.read_text() == '{"patient_id": "P1"}'
    assert dropped.exists()
    assert rig.quarantine.list() == []


def test_a_name_taken_in_the_drop_folder_is_refused_and_nothing_moves(rig: Desk) -> None:
    dropped = rig.drop / "scan.png"
    gray_image().save(dropped)
    rig.quarantine.put(dropped, "export", "not an image")
    dropped.write_bytes(b"a newer file of the same name")
    [entry] = rig.desk.entries()
    with pytest.raises(RequeueError, match="already has"):
        rig.desk.requeue(entry.ident, "cli:tech")
    assert dropped.read_bytes() == b"a newer file of the same name"
    assert [e.ident for e in rig.desk.entries()] == [entry.ident]


def test_a_received_object_is_received_again_as_the_same_callers(rig: Desk, tmp_path: Path) -> None:
    part10 = write_ct(tmp_path / "ct.dcm")
    with part10.open("rb") as f:
        f.seek(dataset_offset(part10))
        dataset_sha = hashlib.sha256(f.read()).hexdigest()
    rig.quarantine.put(part10, "dicom:MODALITY", "received by C-STORE: an earlier refusal")
    [entry] = rig.desk.entries()
    assert entry.channel is SourceChannel.DICOM

    result = rig.desk.requeue(entry.ident, "web:tech")

    assert result.outcome == "queued" and result.object_id is not None
    info = rig.spool.show(result.object_id)
    assert info is not None and info.kind == "dicom-store"
    [source] = info.sources
    assert (source.channel, source.source, source.calling_ae) == (
        SourceChannel.DICOM,
        "dicom:MODALITY",
        "MODALITY",
    )
    assert source.sha256 == dataset_sha  # what a resend of the C-STORE is recognised by
    assert rig.quarantine.list() == []
    assert rig.audit()[-1]["details"] == {
        "outcome": "queued",
        "channel": "dicom",
        "object_id": result.object_id,
    }
    assert list(rig.spool.staging_dir.iterdir()) == []


def test_a_received_object_refused_again_is_quarantined_again_with_its_bytes(
    rig: Desk, tmp_path: Path
) -> None:
    part10 = write_ct(tmp_path / "ct.dcm")
    part10.write_bytes(part10.read_bytes()[:-500])  # cut short: the check refuses it
    digest = _sha(part10)
    rig.quarantine.put(part10, "dicom:MODALITY", "received by C-STORE: old reason")
    [entry] = rig.desk.entries()

    result = rig.desk.requeue(entry.ident, "cli:tech")

    assert result.outcome == "quarantined" and result.ok
    [again] = rig.desk.entries()
    assert again.ident != entry.ident
    assert again.file.reason.startswith("received by C-STORE: ")
    assert again.file.reason != entry.file.reason
    assert again.file.sha256 == digest  # the same bytes, kept
    assert rig.spool.list_deliveries(limit=10) == []


def test_a_full_queue_leaves_the_file_in_quarantine_as_it_was(tmp_path: Path) -> None:
    rig = _desk(tmp_path, max_bytes=1)
    try:
        part10 = write_ct(tmp_path / "ct.dcm")
        rig.quarantine.put(part10, "dicom:MODALITY", "received by C-STORE: old")
        [entry] = rig.desk.entries()
        result = rig.desk.requeue(entry.ident, "cli:tech")
        assert result.outcome == "kept" and not result.ok
        assert "queue full" in result.what
        assert rig.desk.entries() == [entry]
        assert entry.file.path.exists()
    finally:
        rig.spool.close()


def test_what_cannot_be_put_back_says_why(rig: Desk, tmp_path: Path) -> None:
    message = tmp_path / "msg.bin"
    message.write_bytes(b"\x02H|\\^&\r")
    rig.quarantine.put(message, "monitor", "no patient ID in the message")
    gone = tmp_path / "gone.png"
    gone.write_bytes(b"x")
    rig.quarantine.put(gone, "old-folder", "not an image")
    serial, unknown = rig.desk.entries()
    assert serial.channel is SourceChannel.SERIAL
    assert serial.not_requeueable == "a device message is not put back: the device sends it again"
    assert unknown.channel is SourceChannel.UNRECORDED
    assert unknown.not_requeueable == "its source 'old-folder' is not configured any more"
    for entry in (serial, unknown):
        with pytest.raises(RequeueError):
            rig.desk.requeue(entry.ident, "cli:tech")
    with pytest.raises(RequeueError, match="nothing in quarantine has the id"):
        rig.desk.requeue("20990101T000000Z-1", "cli:tech")
    assert len(rig.desk.entries()) == 2
    counts = rig.desk.counts()
    assert counts[SourceChannel.SERIAL] == (1, 7)
    assert counts[SourceChannel.UNRECORDED] == (1, 1)
    assert counts[SourceChannel.DICOM] == (0, 0)


def test_a_received_object_waits_while_the_listener_takes_no_storage(tmp_path: Path) -> None:
    rig = _desk(tmp_path, storage=False)
    try:
        rig.quarantine.put(write_ct(tmp_path / "ct.dcm"), "dicom:MODALITY", "received: old")
        [entry] = rig.desk.entries()
        assert entry.not_requeueable == "the DICOM listener's storage is not enabled"
    finally:
        rig.spool.close()
