"""Preconditions before installing: disk, transfers in flight vs the window, low voltage."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.spool.store import Spool
from gateway.update.preconditions import (
    HWMON,
    THROTTLED,
    MaintenanceWindow,
    check_disk,
    check_transfers,
    check_voltage,
    evaluate,
    sending_count,
)
from tests.spool.objects import stage

MIB = 1024 * 1024


def local_epoch(hour: int, minute: int) -> float:
    """Today at hour:minute in the box's local time."""
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hour, minute, 0, 0, 0, -1))


def test_window_parses_and_wraps_midnight() -> None:
    night = MaintenanceWindow.parse("02:00-04:00")
    assert night.contains(local_epoch(2, 0))
    assert night.contains(local_epoch(3, 59))
    assert not night.contains(local_epoch(4, 0))
    late = MaintenanceWindow.parse("23:30-01:00")
    assert late.contains(local_epoch(23, 45))
    assert late.contains(local_epoch(0, 30))
    assert not late.contains(local_epoch(12, 0))
    assert str(late) == "23:30-01:00"


@pytest.mark.parametrize("text", ["2-4", "02:00", "25:00-01:00", "03:00-03:00", "a:b-c:d"])
def test_bad_windows_are_refused_with_the_form_to_use(text: str) -> None:
    with pytest.raises(ValueError, match="maintenance window"):
        MaintenanceWindow.parse(text)


def test_disk_needs_three_bundles_where_releases_live(tmp_path: Path) -> None:
    releases = tmp_path / "opt" / "releases"  # not created yet: its parent's filesystem counts
    assert check_disk(10 * MIB, releases, tmp_path, lambda _p: 30 * MIB) is None
    reason = check_disk(10 * MIB, releases, tmp_path, lambda _p: 29 * MIB)
    assert reason == f"not enough free disk on {tmp_path}: 29.0 MiB free, 30.0 MiB needed"


def test_sending_delivery_counts_as_a_transfer_in_flight(tmp_path: Path) -> None:
    assert sending_count(tmp_path / "spool" / "queue.sqlite") == 0  # no queue yet
    spool = Spool(tmp_path, ["pacs"], 100 * MIB, FakeClock())
    spool.open()
    try:
        spool.enqueue(stage(spool), "drop/a.jpg")
        assert sending_count(spool.db_path) == 0
        assert spool.claim_next("pacs") is not None  # a lane is sending it now
        assert sending_count(spool.db_path) == 1
    finally:
        spool.close()


def test_transfers_block_outside_the_window_only() -> None:
    window = MaintenanceWindow.parse("02:00-04:00")
    assert check_transfers(0, window, local_epoch(12, 0)) is None
    assert check_transfers(2, window, local_epoch(3, 0)) is None
    assert check_transfers(2, window, local_epoch(12, 0)) == (
        "2 transfer(s) to the PACS in flight (outside the maintenance window 02:00-04:00): "
        "waiting until idle"
    )
    assert "no maintenance window" in (check_transfers(1, None, local_epoch(3, 0)) or "")


def test_voltage_flags_from_firmware_and_hwmon(tmp_path: Path) -> None:
    assert check_voltage(tmp_path) is None  # neither file: nothing reports, nothing blocks
    throttled = tmp_path / THROTTLED
    throttled.parent.mkdir(parents=True)
    throttled.write_text("0x50000\n")  # under-voltage happened since boot, not now
    assert check_voltage(tmp_path) is None
    throttled.write_text("0x50005\n")
    assert "under-voltage now" in (check_voltage(tmp_path) or "")
    throttled.write_text("0x0\n")
    alarm = tmp_path / HWMON / "hwmon0" / "in0_lcrit_alarm"
    alarm.parent.mkdir(parents=True)
    alarm.write_text("0\n")
    assert check_voltage(tmp_path) is None
    alarm.write_text("1\n")
    assert check_voltage(tmp_path) == f"low-voltage alarm in {alarm}: fix the power first"


def test_evaluate_lists_every_failed_check(tmp_path: Path) -> None:
    throttled = tmp_path / "sys-root" / THROTTLED
    throttled.parent.mkdir(parents=True)
    throttled.write_text("0x1")
    report = evaluate(
        bundle_size=100 * MIB,
        releases_root=tmp_path / "releases",
        state_dir=tmp_path,
        window=None,
        clock=FakeClock(local_epoch(12, 0)),
        sys_root=tmp_path / "sys-root",
        in_flight=lambda: 1,
        free_bytes=lambda _p: MIB,
    )
    assert not report.ok
    assert len(report.reasons) == 3
    fine = evaluate(
        bundle_size=MIB,
        releases_root=tmp_path / "releases",
        state_dir=tmp_path,
        window=None,
        clock=FakeClock(local_epoch(12, 0)),
        sys_root=tmp_path / "empty",
    )
    assert fine.ok, fine.reasons
