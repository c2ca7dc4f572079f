"""What the web panel reads and drives: the running gateway's parts, passed in by the daemon."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit import AuditLog
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.forward.condition import LaneStatus, StatusSource
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.requeue import QuarantineDesk
from gateway.ingest.serial.reader import SerialReader
from gateway.listener.server import DicomListener
from gateway.spool.store import Spool
from gateway.worklist.cache import WorklistCache
from gateway.worklist.reconcile import Reconciler
from gateway.worklist.refresher import WorklistRefresher
from gateway.worklist.selection import RoomSelection


@dataclass(frozen=True)
class WebServices:
    """Everything a page or an API route may use; the worklist parts are None without [worklist].

    The panel never reaches into the daemon for anything not listed here, so a test can build
    the panel on a real spool and cache without a running gateway.
    """

    config_path: Path  # the TOML file the gateway was started with (edited by the panel)
    config: GatewayConfig  # the configuration running now
    credentials_dir: str | None
    clock: Clock
    started_at: float  # wall clock, seconds since the epoch, when the gateway started
    version: str
    spool: Spool
    reconciler: Reconciler
    audit: AuditLog
    worklist: WorklistCache | None = None
    refresher: WorklistRefresher | None = None
    selection: RoomSelection | None = None
    watchers: Mapping[str, FolderWatcher] = field(default_factory=dict)
    serial_readers: Mapping[str, SerialReader] = field(default_factory=dict)
    listener: DicomListener | None = None
    quarantine: QuarantineDesk | None = None  # quarantined files: list, requeue
    lanes: Mapping[str, StatusSource] = field(default_factory=dict)  # per destination name
    # Asks the daemon to restart with the configuration file as it now is (apply, rollback).
    request_restart: Callable[[], None] | None = None
    # Where /proc, /run and /data are: "/" on the box; a fake root in tests (Network & time,
    # the clock banner).
    system_root: Path = Path("/")

    def lane_status(self, destination: str) -> LaneStatus | None:
        """The running lane's condition for ``destination``; None when none runs (removed)."""
        lane = self.lanes.get(destination)
        return None if lane is None else lane.status

    @property
    def state_dir(self) -> Path:
        """Where the gateway keeps its state (the panel's users, sessions, certificates too)."""
        return self.config.gateway.state_dir
