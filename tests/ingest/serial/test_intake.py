"""Serial intake: a device message bound, converted and durably queued, or kept in quarantine.

The converter is a fake here (what it writes is not the point); the queue, the quarantine and
the binder are the real ones on tmp paths. The real SerialConverter is exercised end to end in
tests/test_daemon_serial.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.identity import PatientIdentity
from gateway.ingest.quarantine import Quarantine
from gateway.ingest.serial.intake import SerialIntake
from gateway.ingest.serial.message import DeviceMessage
from gateway.spool.entries import DeliveryState, ObjectSource
from gateway.spool.store import Spool
from gateway.worklist.binding import Binder, Binding
from tests.worklist.factory import make_item
from tests.worklist.test_binding import FakeLookup

JANE = make_item(patient_id="P-JANE", accession_number="ACC1", step_id="S1")


class FakeConverter:
    """Writes ``objects`` small files per message, with UIDs derived from the message bytes."""

    def __init__(self, objects: int = 2) -> None:
        self.objects = objects
        self.fail: Exception | None = None
        self.bindings: list[Binding] = []

    def convert(
        self, message: DeviceMessage, binding: Binding, staging: Callable[[], Path]
    ) -> list[ConvertedObject]:
        self.bindings.append(binding)
        if self.fail is not None:
            raise self.fail
        digest = hashlib.sha256(message.digest_input).hexdigest()
        out = []
        for n in range(self.objects):
            path = staging()
            path.write_bytes(b"DICM" + message.raw + bytes([n]) * 100)
            out.append(
                ConvertedObject(
                    path=path,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
                    sop_instance_uid=f"2.25.{int(digest[:24], 16)}{n}",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    study_instance_uid="2.25.1",
                    source_sha256=digest,
                    kind="sr",
                    held_reason=binding.held_reason,
                )
            )
        return out


class Rig:
    def __init__(self, tmp_path: Path, max_bytes: int = 10_000_000, worklist: bool = False) -> None:
        self.clock = FakeClock()
        self.spool = Spool(tmp_path / "state", ["pacs"], max_bytes, self.clock)
        self.spool.open()
        self.quarantine = Quarantine(tmp_path / "quarantine", self.clock)
        self.converter = FakeConverter()
        binder = Binder(FakeLookup([JANE]) if worklist else None, None, require_match=False)
        self.intake = SerialIntake(
            source="bga",
            converter=self.converter,
            spool=self.spool,
            quarantine=self.quarantine,
            binder=binder,
            clock=self.clock,
            logger=logging.getLogger("t.serial.intake"),
            port="/dev/ttyUSB0",
        )

    def queued(self) -> int:
        return sum(self.spool.stats()["pacs"].counts.values())

    def staging_left(self) -> list[Path]:
        return list(self.spool.staging_dir.iterdir())


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.spool.close()


def message(raw: bytes = b"R|1|^^^pH|7.41", patient_id: str | None = "P-JANE") -> DeviceMessage:
    return DeviceMessage(
        source="bga",
        kind="measurements",
        identity=PatientIdentity(patient_id=patient_id, accession_number="ACC1"),
        received_at=1_700_000_000.0,
        raw=raw,
        sequence=1,
    )


def test_true_only_when_every_object_is_queued(rig: Rig) -> None:
    assert rig.intake(message())
    assert rig.queued() == 2
    assert rig.intake.counts["queued"] == 2
    assert rig.staging_left() == []


def test_each_object_records_the_line_and_port_it_came_from(rig: Rig) -> None:
    assert rig.intake(message())
    for row in rig.spool.list_deliveries(None, None, 10):
        info = rig.spool.show(row.object_id)
        assert info is not None
        [source] = info.sources
        assert (source.channel, source.source, source.port) == ("serial", "bga", "/dev/ttyUSB0")
        assert (source.arrived_at, source.size) == (1_700_000_000.0, len(message().raw))
        assert source.label == "bga (serial /dev/ttyUSB0)"


def test_message_binds_through_the_worklist_by_its_identity(tmp_path: Path) -> None:
    rig = Rig(tmp_path, worklist=True)
    try:
        assert rig.intake(message())
        binding = rig.converter.bindings[0]
        assert binding.item is not None and binding.item.key == JANE.key
        assert not binding.held
    finally:
        rig.spool.close()


def test_message_without_patient_is_queued_held(rig: Rig) -> None:
    assert rig.intake(message(patient_id=None))
    assert rig.spool.stats()["pacs"].counts.get(DeliveryState.HELD, 0) == 2
    assert rig.intake.counts["held"] == 2


def test_queue_full_refuses_and_leaves_nothing_then_room_takes_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_bytes=150)
    try:
        assert not rig.intake(message())
        assert rig.queued() == 0 and rig.staging_left() == []
        assert rig.intake.full
        rig.spool.max_bytes = 10_000
        assert rig.intake(message())  # the device's resend
        assert rig.queued() == 2 and not rig.intake.full
    finally:
        rig.spool.close()


def test_resend_after_a_half_queued_message_queues_the_rest_once(rig: Rig) -> None:
    real = rig.spool.enqueue
    calls = []

    def flaky(obj: ConvertedObject, source: str, origin: ObjectSource | None = None):  # type: ignore[no-untyped-def]
        calls.append(obj.sop_instance_uid)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real(obj, source, origin)

    rig.spool.enqueue = flaky  # type: ignore[method-assign]
    assert not rig.intake(message())
    assert rig.queued() == 1 and rig.staging_left() == []
    assert rig.intake(message())
    assert rig.queued() == 2
    assert rig.intake.counts["duplicate"] == 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConversionError("no result the profile can map"), "no result the profile can map"),
        (RuntimeError("bug"), "internal conversion error (RuntimeError)"),
    ],
)
def test_unconvertible_message_is_kept_in_quarantine_and_acknowledged(
    rig: Rig, error: Exception, reason: str
) -> None:
    rig.converter.fail = error
    assert rig.intake(message(b"H|\\^&\rP|1|PID\rL|1|N\r"))
    assert rig.queued() == 0
    [kept] = rig.quarantine.list()
    assert kept.reason == reason and kept.source == "bga"
    assert kept.path.read_bytes() == b"H|\\^&\rP|1|PID\rL|1|N\r"
    record = json.loads(next(rig.quarantine.folder.glob("*.reason.json")).read_text())
    assert record["source"] == "bga"
    assert rig.staging_left() == []


def test_disk_error_while_converting_refuses_so_the_device_resends(rig: Rig) -> None:
    rig.converter.fail = OSError(28, "No space left on device")
    assert not rig.intake(message())
    assert rig.quarantine.list() == [] and rig.queued() == 0


def test_quarantine_that_fails_refuses_rather_than_losing_the_message(rig: Rig) -> None:
    rig.converter.fail = ConversionError("bad")

    def broken(path: Path, source: str, reason: str) -> Path:
        raise OSError(28, "No space left on device")

    rig.quarantine.put = broken  # type: ignore[method-assign]
    assert not rig.intake(message())
    assert rig.staging_left() == []
