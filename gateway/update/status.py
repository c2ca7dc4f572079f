"""The updater's small state files under ``<state_dir>/update/``, and the status others read.

  install.json    the install state machine (see installer.py); the last install once reported
  blacklist.json  versions that failed their trial start: {"1.4.0": {"reason": ..., "at": ...}}
  floor.json      the highest version ever committed here; nothing older is installed again
  ready.json      written by the gateway once it sent READY=1: {"pid", "at", "version"}
  update.jsonl    the audit trail (gateway/update/audit.py)

Every file is replaced atomically (temp file, fsync, rename, fsync of the directory), so a
reader or a power cut sees the old or the whole new content. ``read_status`` is what
``update status``, /metrics and the web panel show.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from gateway.spool.durable import write_bytes_durably

UPDATE_DIR = "update"
INSTALL_FILE = "install.json"
BLACKLIST_FILE = "blacklist.json"
FLOOR_FILE = "floor.json"
READY_FILE = "ready.json"

# The states of install.json, in order; committed and rolled_back are the two trial outcomes.
DOWNLOADING = "downloading"
VERIFIED = "verified"
INSTALLED = "installed"
TRIAL = "trial"
COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
FAILED = "failed"  # the bundle could not be installed; `current` was never touched
REPORTED = "reported"


def update_dir(state_dir: Path) -> Path:
    """``<state_dir>/update``, the updater's own folder."""
    return state_dir / UPDATE_DIR


@dataclass(frozen=True)
class InstallRecord:
    """One install in progress, or the last one once reported."""

    state: str
    version: str
    target: str
    sha256: str
    bundle: str
    started_at: float
    updated_at: float
    previous: str | None = None  # the release `current` pointed to before the switch
    trial_deadline: float | None = None
    restarted_at: float | None = None  # the trial's restart of the gateway was asked for
    result: str | None = None  # committed | rolled_back | failed
    reason: str = ""


@dataclass(frozen=True)
class ReadyMarker:
    """The gateway reached READY: which process, when, running which version."""

    pid: int
    at: float
    version: str


@dataclass(frozen=True)
class UpdateStatus:
    """What the box's update state looks like, for `update status`, /metrics and the panel."""

    state: str | None  # None: nothing was ever installed by the updater
    version: str | None
    result: str | None
    reason: str
    updated_at: float | None
    floor: str | None
    blacklist: Mapping[str, str] = field(default_factory=dict)  # version -> reason


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_durably(path, json.dumps(value, sort_keys=True, indent=1).encode() + b"\n")


def read_install(state_dir: Path) -> InstallRecord | None:
    """The install record, or None when no install ever started."""
    raw = _read_json(update_dir(state_dir) / INSTALL_FILE)
    return InstallRecord(**raw) if raw else None


def write_install(state_dir: Path, record: InstallRecord) -> None:
    """Persist the install record durably."""
    _write_json(update_dir(state_dir) / INSTALL_FILE, asdict(record))


def read_blacklist(state_dir: Path) -> dict[str, str]:
    """Versions refused for good on this box, each with the reason its trial failed."""
    raw = _read_json(update_dir(state_dir) / BLACKLIST_FILE) or {}
    return {version: str(entry.get("reason", "")) for version, entry in raw.items()}


def add_to_blacklist(state_dir: Path, version: str, reason: str, at: float) -> None:
    """Never offer ``version`` to this box again."""
    raw = _read_json(update_dir(state_dir) / BLACKLIST_FILE) or {}
    raw[version] = {"reason": reason, "at": at}
    _write_json(update_dir(state_dir) / BLACKLIST_FILE, raw)


def read_floor(state_dir: Path) -> str | None:
    """The highest version ever committed on this box (PEP 440), or None."""
    raw = _read_json(update_dir(state_dir) / FLOOR_FILE)
    return str(raw["version"]) if raw else None


def raise_floor(state_dir: Path, version: str) -> None:
    """Raise the floor to ``version``; a lower version leaves it where it is."""
    floor = read_floor(state_dir)
    if floor is not None and _parse(floor) >= _parse(version):
        return
    _write_json(update_dir(state_dir) / FLOOR_FILE, {"version": version})


def mark_ready(state_dir: Path, marker: ReadyMarker) -> None:
    """Called by the gateway right after READY=1: the trial check waits for this."""
    _write_json(update_dir(state_dir) / READY_FILE, asdict(marker))


def read_ready(state_dir: Path) -> ReadyMarker | None:
    """The last READY marker the gateway wrote, or None."""
    raw = _read_json(update_dir(state_dir) / READY_FILE)
    return ReadyMarker(**raw) if raw else None


def read_status(state_dir: Path) -> UpdateStatus:
    """The update state for display: last install, its result and reason, floor, blacklist."""
    record = read_install(state_dir)
    return UpdateStatus(
        state=record.state if record else None,
        version=record.version if record else None,
        result=record.result if record else None,
        reason=record.reason if record else "",
        updated_at=record.updated_at if record else None,
        floor=read_floor(state_dir),
        blacklist=read_blacklist(state_dir),
    )


def _parse(version: str) -> Version:
    try:
        return Version(version)
    except InvalidVersion:
        return Version("0")
