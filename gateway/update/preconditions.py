"""Whether now is a good moment to install: disk, transfers, maintenance window, supply voltage.

Each check returns None when it passes, or a sentence an engineer can act on. ``evaluate``
runs all of them, so ``update status`` and the audit show every reason at once, not the first:

* **disk**: the filesystem holding the releases needs three times the bundle (the download,
  the unpacked release, and headroom); a state folder on another filesystem needs the bundle.
* **transfers**: no delivery is being sent to a PACS right now (the queue has no ``sending``
  row), or the clock is inside the configured maintenance window ("02:00-04:00", local time,
  may wrap midnight). An install that interrupts a transfer loses nothing (the delivery goes
  back to pending at the next start) but makes the PACS see a resend.
* **voltage**: no low-voltage flag where the hardware reports one: bit 0 of the Raspberry Pi
  firmware's ``get_throttled`` (under-voltage now), or any ``in0_lcrit_alarm`` of a hwmon
  device. Where neither file exists the check passes. Unpacking on a browning-out supply is
  how SD cards get corrupted.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import Clock

THROTTLED = Path("sys/devices/platform/soc/soc:firmware/get_throttled")
HWMON = Path("sys/class/hwmon")
DISK_FACTOR = 3


@dataclass(frozen=True)
class MaintenanceWindow:
    """A daily window in local time, in minutes after midnight; ``end`` may be past midnight."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        """``"HH:MM-HH:MM"``; ValueError with the reason otherwise."""
        try:
            first, second = text.split("-")
            start, end = _minutes(first), _minutes(second)
        except ValueError:
            raise ValueError(f"maintenance window {text!r}: write it as HH:MM-HH:MM") from None
        if start == end:
            raise ValueError(f"maintenance window {text!r} is empty")
        return cls(start, end)

    def contains(self, epoch: float) -> bool:
        """Whether ``epoch`` falls inside the window, in the box's local time."""
        local = time.localtime(epoch)
        minute = local.tm_hour * 60 + local.tm_min
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class PreconditionReport:
    """The verdict: install now when ``reasons`` is empty."""

    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No check failed."""
        return not self.reasons


def check_disk(
    bundle_size: int,
    releases_root: Path,
    state_dir: Path,
    free_bytes: Callable[[Path], int] | None = None,
) -> str | None:
    """Room for the release (×3 where releases live, ×1 for the download elsewhere)."""
    free = free_bytes or _free_bytes
    releases_fs, state_fs = _existing(releases_root), _existing(state_dir)
    needs = [(releases_fs, bundle_size * DISK_FACTOR)]
    if _device(state_fs) != _device(releases_fs):
        needs.append((state_fs, bundle_size))
    for where, need in needs:
        have = free(where)
        if have < need:
            return f"not enough free disk on {where}: {_mib(have)} free, {_mib(need)} needed"
    return None


def sending_count(queue_db: Path) -> int:
    """Deliveries being sent now, read from the queue without writing to it (0: no queue)."""
    if not queue_db.exists():
        return 0
    conn = sqlite3.connect(f"{queue_db.as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        row = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'sending'").fetchone()
        return int(row[0])
    finally:
        conn.close()


def check_transfers(in_flight: int, window: MaintenanceWindow | None, now: float) -> str | None:
    """Idle, or inside the maintenance window."""
    if in_flight == 0:
        return None
    if window is not None and window.contains(now):
        return None
    where = f"outside the maintenance window {window}" if window else "no maintenance window"
    return f"{in_flight} transfer(s) to the PACS in flight ({where}): waiting until idle"


def check_voltage(root: Path = Path("/")) -> str | None:
    """No under-voltage flag from the Pi firmware or a hwmon low-critical alarm."""
    throttled = root / THROTTLED
    try:
        value = int(throttled.read_text().strip(), 0)
    except (OSError, ValueError):
        value = 0
    if value & 0x1:
        return f"the supply is under-voltage now ({throttled}: {value:#x}): fix the power first"
    for alarm in sorted((root / HWMON).glob("*/in0_lcrit_alarm")):
        try:
            raised = alarm.read_text().strip() not in ("", "0")
        except OSError:
            continue
        if raised:
            return f"low-voltage alarm in {alarm}: fix the power first"
    return None


def evaluate(
    *,
    bundle_size: int,
    releases_root: Path,
    state_dir: Path,
    window: MaintenanceWindow | None,
    clock: Clock,
    sys_root: Path = Path("/"),
    in_flight: Callable[[], int] | None = None,
    free_bytes: Callable[[Path], int] | None = None,
) -> PreconditionReport:
    """Run every check; the report lists each failure."""
    count = in_flight() if in_flight else sending_count(state_dir / "spool" / "queue.sqlite")
    reasons = [
        check_disk(bundle_size, releases_root, state_dir, free_bytes),
        check_transfers(count, window, clock.now()),
        check_voltage(sys_root),
    ]
    return PreconditionReport(tuple(r for r in reasons if r))


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(text)
    return h * 60 + m


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the releases folder may not exist yet)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _device(path: Path) -> int:
    return path.stat().st_dev


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
