"""The room selection: durable, expiring, and safe to write from the CLI while the daemon reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.worklist.selection import RoomSelection, selection_path
from tests.worklist.factory import make_item

ITEM = make_item(accession_number="ACC1", step_id="S1")
OTHER = make_item(accession_number="ACC2", step_id="S2", study_instance_uid="1.2.3.2")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_selected_procedure_is_current_and_survives_a_restart(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = selection_path(tmp_path)
    RoomSelection(path, clock).select(ITEM, "cli:alice")
    current = RoomSelection(path, clock).current()  # a new instance: another process
    assert current is not None
    assert (current.item_key, current.accession_number, current.by) == (
        ITEM.key,
        "ACC1",
        "cli:alice",
    )
    assert current.selected_at == clock.now()


def test_a_new_selection_replaces_the_old_one(tmp_path: Path, clock: FakeClock) -> None:
    room = RoomSelection(selection_path(tmp_path), clock)
    room.select(ITEM, "cli:alice")
    room.select(OTHER, "api:bob")
    current = room.current()
    assert current is not None
    assert (current.item_key, current.by) == (OTHER.key, "api:bob")


def test_selection_expires_after_its_lifetime(tmp_path: Path, clock: FakeClock) -> None:
    room = RoomSelection(selection_path(tmp_path), clock, expires_minutes=30)
    room.select(ITEM, "cli:alice")
    clock.advance(30 * 60)
    assert room.current() is not None
    clock.advance(1)
    assert room.current() is None
    recorded = room.recorded()  # still shown to the operator as the expired one
    assert recorded is not None
    assert recorded.item_key == ITEM.key


def test_selection_stamped_in_the_future_counts_as_none(tmp_path: Path) -> None:
    clock = FakeClock(start=2_000_000_000.0)
    path = selection_path(tmp_path)
    RoomSelection(path, clock).select(ITEM, "cli:alice")
    went_back = FakeClock(start=2_000_000_000.0 - 3600)
    assert RoomSelection(path, went_back).current() is None


def test_clear_forgets_the_selection_and_records_who(tmp_path: Path, clock: FakeClock) -> None:
    path = selection_path(tmp_path)
    room = RoomSelection(path, clock)
    room.select(ITEM, "cli:alice")
    room.clear("cli:bob")
    assert room.current() is None
    assert room.recorded() is None
    record = json.loads(path.read_text("utf-8"))
    assert record["changed_by"] == "cli:bob"


def test_no_file_means_no_selection(tmp_path: Path, clock: FakeClock) -> None:
    assert RoomSelection(selection_path(tmp_path), clock).current() is None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"version": 99, "selection": null}',
        b'{"version": 1, "selection": 5}',
        b'{"version": 1, "selection": {"item_key": "k"}}',
        b"\xff\xfe",
    ],
)
def test_unreadable_file_means_no_selection(
    tmp_path: Path, clock: FakeClock, content: bytes
) -> None:
    path = selection_path(tmp_path)
    path.write_bytes(content)
    assert RoomSelection(path, clock).current() is None


def test_the_file_holds_no_patient_name_or_id(tmp_path: Path, clock: FakeClock) -> None:
    path = selection_path(tmp_path)
    RoomSelection(path, clock).select(make_item(patient_id="PID-SECRET"), "cli:alice")
    text = path.read_text("utf-8")
    assert "PID-SECRET" not in text
    assert "Doe" not in text
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


WRITER = """
import sys
from pathlib import Path
from gateway.clock import SystemClock
from gateway.worklist.selection import RoomSelection
from tests.worklist.factory import make_item
items = [make_item(accession_number=f"ACC{i}", step_id=f"S{i}") for i in range(2)]
room = RoomSelection(Path(sys.argv[1]), SystemClock())
for n in range(int(sys.argv[2])):
    room.select(items[n % 2], "cli:writer")
"""


def test_reader_never_sees_a_torn_selection_while_another_process_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.clock import SystemClock

    path = selection_path(tmp_path)
    keys = {make_item(accession_number=f"ACC{i}", step_id=f"S{i}").key for i in range(2)}
    reader = RoomSelection(path, SystemClock())
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "300"])
    seen: set[str] = set()
    try:
        while writer.poll() is None:
            current = reader.current()
            if current is not None:
                seen.add(current.item_key)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0
    final = reader.current()
    assert final is not None
    seen.add(final.item_key)
    assert seen <= keys
    # A torn write would have been read as an unreadable file, which is logged.
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]
