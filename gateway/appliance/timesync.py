"""Is the box's clock synchronised, and if not, where do its dates come from?

The Pi has no real-time clock. At boot the system clock is set forward to the last time the box
knew: ``fake-hwclock`` restores the time it saved at the last shutdown (and hourly), and
systemd-timesyncd, when it starts, advances the clock to the time stamp of its clock file
(``/var/lib/systemd/timesync/clock``, touched at every synchronisation). The clock then runs on
from there; the gateway does not wait for NTP (a hospital network may offer none), so every
date it writes into DICOM (creation, content and study dates of converted objects) comes from
that system clock, behind real time by as long as the box was off, until timesyncd reaches a
server and steps the clock.

How it is known (systemd-timesyncd, the NTP client of the image):

=======================================================  ==========================================
observation                                              state
=======================================================  ==========================================
``/run/systemd/timesync/synchronized`` exists            SYNCED: timesyncd made it at its first
                                                         synchronisation since boot (/run is
                                                         emptied at every boot)
``/run/systemd/timesync/`` exists, the flag does not     NOT_SYNCED: timesyncd runs, no server yet
neither                                                  UNKNOWN: timesyncd is not running (a box
                                                         installed from the .deb may use chrony)
=======================================================  ==========================================

(``timedatectl show -p NTPSynchronized`` asks the kernel through adjtimex(2); the gateway's unit
forbids that call with ProtectClock=, so the panel reads the file.) Pure: :func:`clock_status`
decides from what :func:`observe` read.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateway.appliance.files import under

SYNC_FLAG = "/run/systemd/timesync/synchronized"
TIMESYNC_RUNTIME = "/run/systemd/timesync"
TIMESYNC_CLOCK = "/var/lib/systemd/timesync/clock"
FAKE_HWCLOCK = "/data/system/fake-hwclock.data"  # APPLIANCE.md: fake-hwclock's file on /data


class ClockState(StrEnum):
    """What is known of the clock."""

    SYNCED = "synced"
    NOT_SYNCED = "not_synced"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClockObservation:
    """What the files say (read by :func:`observe`)."""

    synchronized: bool
    timesyncd_running: bool
    last_known: float | None  # the latest saved time (epoch seconds), if any


@dataclass(frozen=True)
class ClockStatus:
    """The clock's state and the sentence the panel shows."""

    state: ClockState
    text: str

    @property
    def problem(self) -> bool:
        """True when the dates the box writes may be wrong."""
        return self.state is ClockState.NOT_SYNCED


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def clock_status(seen: ClockObservation) -> ClockStatus:
    """The table above, with where the dates come from while not synchronised."""
    if seen.synchronized:
        return ClockStatus(ClockState.SYNCED, "clock synchronised by NTP since boot")
    if not seen.timesyncd_running:
        return ClockStatus(
            ClockState.UNKNOWN,
            "clock synchronisation not known (systemd-timesyncd is not running; "
            "another NTP client may be)",
        )
    if seen.last_known is None:
        source = "the time the software was built (no saved time yet)"
    else:
        source = f"the last known time ({_utc(seen.last_known)}, fake-hwclock / timesyncd)"
    return ClockStatus(
        ClockState.NOT_SYNCED,
        f"clock not synced since boot: dates come from {source}, carried on by the box's own "
        "clock, so they may be behind; check the NTP server in the network settings",
    )


def _fake_hwclock_time(path: Path) -> float | None:
    # fake-hwclock saves "YYYY-MM-DD HH:MM:SS" in UTC.
    try:
        text = path.read_text(encoding="ascii").strip()
        saved = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except (OSError, ValueError):
        return None
    return saved.replace(tzinfo=datetime.UTC).timestamp()


def observe(root: Path) -> ClockObservation:
    """Read the sync flag, whether timesyncd runs, and the latest saved time under ``root``."""
    saved: list[float] = []
    with contextlib.suppress(OSError):
        saved.append(under(root, TIMESYNC_CLOCK).stat().st_mtime)
    hwclock = _fake_hwclock_time(under(root, FAKE_HWCLOCK))
    if hwclock is not None:
        saved.append(hwclock)
    return ClockObservation(
        synchronized=under(root, SYNC_FLAG).exists(),
        timesyncd_running=under(root, TIMESYNC_RUNTIME).is_dir(),
        last_known=max(saved, default=None),
    )


def read_clock_status(root: Path = Path("/")) -> ClockStatus:
    """The clock's status on the box whose root is ``root``."""
    return clock_status(observe(root))
