"""Whether ingest may add to the queue: the configured limit and the real free space.

Rules (:func:`decide_room`), checked in this order, the first that applies says why not:

1. The state storage has a fault (full, read-only, I/O error) met by a write and not yet
   cleared, or the file system is mounted read-only: no ingest.
2. The queue's payloads plus the incoming bytes would exceed ``max_queue_bytes``.
3. The file system's free space (what an unprivileged writer may use, ``f_bavail``), less the
   incoming bytes, less the delivery reserve while it is not in place (released to let
   deliveries be recorded on a full disk: ingest must not eat it), would fall below the
   low-water mark.

The low-water mark (:func:`low_water_mark`) is ``min_free_bytes`` when configured, else the
larger of 64 MiB and 5 % of the file system: headroom for the databases, the logs and the other
users of the disk, and for the flash's wear levelling. Pure: the caller probes the disk
(:func:`probe`) and passes what it saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.storagefault import StorageFault

MIB = 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 64 * MIB
DEFAULT_MIN_FREE_FRACTION = 0.05


@dataclass(frozen=True)
class DiskSpace:
    """One look at the state file system (statvfs)."""

    total: int
    free: int  # bytes an unprivileged writer may still use
    read_only: bool
    used: int = 0  # bytes in use (blocks less all free ones, root's reserve included): df's Used


def used_percent(space: DiskSpace) -> int:
    """The file system's use as ``df`` prints it (Use%): used / (used + available), rounded
    up. Not used / total: the blocks reserved for root are neither used nor available to the
    gateway, and counting them as room (28 GiB of 252 GiB, "11 %") hides a disk that df
    already shows at 28 %."""
    counted = space.used + space.free
    if counted <= 0:
        return 0
    return -(-100 * space.used // counted)  # ceiling, as df rounds


@dataclass(frozen=True)
class Room:
    """The answer to "may ingest add ``incoming`` bytes now?"; ``reason`` says why not."""

    ok: bool
    reason: str = ""
    disk: bool = False  # True when the state file system is the reason (not the queue limit)


def probe(path: Path) -> DiskSpace:
    """statvfs of the file system holding ``path``."""
    st = os.statvfs(path)
    return DiskSpace(
        total=st.f_blocks * st.f_frsize,
        free=st.f_bavail * st.f_frsize,
        read_only=bool(st.f_flag & os.ST_RDONLY),
        used=(st.f_blocks - st.f_bfree) * st.f_frsize,
    )


def low_water_mark(total: int, min_free_bytes: int | None) -> int:
    """Free bytes ingest always leaves on the state file system (see the module docstring)."""
    if min_free_bytes is not None:
        return min_free_bytes
    return max(DEFAULT_MIN_FREE_BYTES, int(total * DEFAULT_MIN_FREE_FRACTION))


def decide_room(
    *,
    incoming: int,
    used: int,
    max_bytes: int,
    space: DiskSpace,
    low_water: int,
    reserve_missing: int,
    fault: StorageFault | None,
) -> Room:
    """Apply the rules of the module docstring."""
    if fault is not None:
        return Room(False, f"state storage {fault}", disk=True)
    if space.read_only:
        return Room(False, f"state storage {StorageFault.READ_ONLY}", disk=True)
    if used + incoming > max_bytes:
        return Room(False, f"queue limit reached ({used} of {max_bytes} bytes used)")
    left = space.free - incoming - reserve_missing
    if left < low_water:
        return Room(
            False,
            f"state disk low ({max(space.free - reserve_missing, 0)} bytes free,"
            f" ingest keeps {low_water})",
            disk=True,
        )
    return Room(True)


@dataclass(frozen=True)
class StorageStatus:
    """The state file system as the spool sees it: for STATUS=, the panel and the metrics."""

    fault: StorageFault | None  # met by a write and not cleared yet
    problem: str  # the fault in words ("" when none)
    since: float | None  # wall time the fault started
    ingest: Room  # may ingest add to the queue now, and if not why
    space: DiskSpace
    low_water: int
    reserve_bytes: int
    reserve_in_place: bool
    unrecorded: int  # delivery outcomes kept in memory until the storage takes them


def free_for_ingest(status: StorageStatus) -> int:
    """Free bytes as the queue counts them (rule 3): what the gateway may use, less the
    delivery reserve while it is given back; ingest pauses when this reaches ``low_water``."""
    missing = 0 if status.reserve_in_place else status.reserve_bytes
    return max(status.space.free - missing, 0)


def describe(status: StorageStatus) -> str:
    """The state storage in one line for an operator: "" while all is well, else what is wrong
    and what it stops (deliveries go on as far as the queue can record them; ingest waits)."""
    parts = []
    if status.fault is not None:
        parts.append(status.problem)
    elif not status.ingest.ok and status.ingest.disk:
        parts.append(status.ingest.reason)
    if not status.ingest.ok and status.ingest.disk:
        parts.append("ingest paused")
    if status.reserve_bytes and not status.reserve_in_place and status.fault is None:
        parts.append("delivery reserve in use")
    if status.unrecorded:
        parts.append(f"{status.unrecorded} deliveries not yet recorded")
    return ", ".join(parts)
