"""The running gateway: every component built from the config and owned by the supervisor.

Start order (stop order is the reverse):
  1. spool          - the queue opens and recovers (in-flight deliveries go back to pending)
  2. grouping       - the study grouping table opens
  3. worklist-cache - the cached Modality Worklist opens (with [worklist])
  4. lane:NAME      - one delivery thread per destination
  5. worklist       - the refresher thread asks the RIS every refresh_seconds (with [worklist])
  6. listener       - our DICOM port: C-ECHO, MWL C-FIND, C-STORE (with [dicom_listener])
  7. serial:NAME    - one port thread per serial line ([[ingest.serial]]), reopened on loss
  8. local-api      - the JSON API on a Unix socket (worklist, procedure selection, held objects)
  9. watch:NAME     - one folder watcher per drop folder; from here on files are taken
 10. web            - the HTTPS panel ([web] enabled), which reads and drives all of the above
Then READY=1 goes to systemd, and the main loop sends STATUS= and WATCHDOG=1 and restarts
threads that died, within a budget.

A fault of the state storage (full, read-only, failing) stops no step: the spool and the
grouping database open when the storage is back (gateway.spool.store), the lanes wait, ingest
pauses, and STATUS= says why (storage_status_line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt

from gateway import __version__ as gateway_version
from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import Clock
from gateway.config import GatewayConfig, queue_limit
from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.serialconv import SerialConverter
from gateway.convert.settings import ConvertSettings
from gateway.convert.uids import UidFactory
from gateway.forward.backoff import Backoff
from gateway.forward.condition import Condition, LaneStatus
from gateway.forward.lane import DeliveryLane
from gateway.forward.sender import StoreSender
from gateway.forward.tlsctx import client_context, server_context
from gateway.ingest.coercion import WorklistCoercion
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.intake import Intake
from gateway.ingest.quarantine import Quarantine
from gateway.ingest.receiver import StoreReceiver
from gateway.ingest.remote.ftp import FtpReceiver, ftps_context
from gateway.ingest.remote.ftpaccounts import FtpAccounts, ftp_dir
from gateway.ingest.requeue import QuarantineDesk
from gateway.ingest.serial.intake import SerialIntake
from gateway.ingest.serial.port import SerialPort
from gateway.ingest.serial.profiles import load_profile, make_engine
from gateway.ingest.serial.reader import SerialReader
from gateway.listener.server import DicomListener
from gateway.listener.services import ListenerService
from gateway.logsetup import event
from gateway.notify import SystemdNotifier
from gateway.spool.entries import DeliveryState, DestinationStats
from gateway.spool.space import describe as describe_storage
from gateway.spool.store import Spool
from gateway.storagefault import StorageNotReadyError, classify
from gateway.supervisor import RestartBudgetExceededError, Supervisor
from gateway.update.status import ReadyMarker, mark_ready
from gateway.web.api import ApiServices, create_api
from gateway.web.localapi import LocalApiError, LocalApiServer, peer_actor, socket_path
from gateway.web.panel import WebPanel
from gateway.web.server import ServerStartError
from gateway.web.services import WebServices
from gateway.web.tlscert import CertificateError, ensure_certificate
from gateway.web.views import duration
from gateway.worklist.binding import Binder
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import MODALITY_WORKLIST_FIND, WorklistClient
from gateway.worklist.lookup import EmptyWorklist
from gateway.worklist.mwl import MwlService
from gateway.worklist.reconcile import Reconciler
from gateway.worklist.refresher import WorklistRefresher
from gateway.worklist.selection import RoomSelection, selection_path

WORKLIST_CACHE_FILE = "worklist.sqlite"
RESTART_GRACE_SECONDS = 3.0  # between "apply" in the panel and the restart it asks for
# From the panel's restart to READY=1 of the process exec'd in place: every service stopped
# (at most the unit's TimeoutStopSec, 45 s), the interpreter and the imports on a cold SD card,
# and the start steps (each may ask for START_STEP_ALLOWANCE itself).
RESTART_ALLOWANCE = 300.0
START_STEP_ALLOWANCE = 120.0  # seconds systemd grants each long start step (EXTEND_TIMEOUT_USEC)

log = logging.getLogger("gateway.daemon")


@dataclass
class Gateway:
    """Builds the components from a config and runs them under one supervisor."""

    config: GatewayConfig
    clock: Clock
    notifier: SystemdNotifier
    credentials_dir: str | None = None
    status_interval: float = 10.0
    config_path: Path | None = None  # the file the gateway runs from (the panel edits it)
    on_ready: Callable[[], object] | None = None  # after READY=1 (confirms a config on trial)
    request_restart: Callable[[], None] | None = None  # stop, then start again from the file
    # Whether the restart still stands when the loop ends (a stop signal since overrules it).
    restart_wanted: Callable[[], bool] = field(default=lambda: True)
    reached_ready: bool = field(init=False, default=False)
    restarting: bool = field(init=False, default=False)  # the stop is the panel's restart
    supervisor: Supervisor = field(init=False)
    spool: Spool = field(init=False)
    watchers: list[FolderWatcher] = field(init=False, default_factory=list)
    worklist_cache: WorklistCache | None = field(init=False, default=None)
    refresher: WorklistRefresher | None = field(init=False, default=None)
    listener: DicomListener | None = field(init=False, default=None)
    room_selection: RoomSelection | None = field(init=False, default=None)
    local_api: LocalApiServer | None = field(init=False, default=None)
    web_panel: WebPanel | None = field(init=False, default=None)
    ftp_receiver: FtpReceiver | None = field(init=False, default=None)
    serial_readers: list[SerialReader] = field(init=False, default_factory=list)
    lanes: list[DeliveryLane] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.config
        state = cfg.gateway.state_dir
        self.supervisor = Supervisor(self.clock)
        max_bytes = queue_limit(cfg.gateway)
        self.spool = Spool(
            state,
            [d.name for d in cfg.destination],
            max_bytes,
            self.clock,
            min_free_bytes=cfg.gateway.min_free_bytes,
            reserve_bytes=cfg.gateway.reserve_bytes,
        )
        uids = UidFactory(cfg.gateway.uid_root)
        settings = ConvertSettings.from_config(cfg)
        grouper = StudyGrouper(state / "grouping.sqlite", settings.study_window_seconds, uids)
        converter = Converter(settings, grouper, uids)
        quarantine = Quarantine(state / "quarantine", self.clock)

        def open_spool() -> None:
            try:
                state.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                if classify(exc) is None:
                    raise  # a storage fault is the spool's to report; anything else stops
            # Recovery and a schema migration on a slow SD card may outlast TimeoutStartSec.
            self.notifier.extend_timeout(START_STEP_ALLOWANCE)
            self.spool.open_when_ready()

        self.supervisor.add("spool", open_spool, self.spool.close)
        self.supervisor.add("grouping", grouper.open_when_ready, grouper.close)

        binder, mwl = self._worklist(state)

        for dest in cfg.destination:
            ctx = client_context(dest.tls, self.credentials_dir) if dest.tls else None
            sender = StoreSender(dest, cfg.gateway.ae_title, ctx, self.clock)
            lane = DeliveryLane(
                dest,
                self.spool,
                sender,
                Backoff(dest.retry),
                self.clock,
                logging.getLogger(f"gateway.lane.{dest.name}"),
            )
            self.lanes.append(lane)
            # At the stop deadline a lane stuck in a C-STORE aborts its association.
            self.supervisor.add_thread(f"lane:{dest.name}", lane.run, lane.interrupt)

        if self.refresher is not None:
            self.supervisor.add_thread("worklist", self.refresher.run)

        receiver = self._listener(quarantine, mwl) if cfg.dicom_listener is not None else None

        self._serial(settings, grouper, uids, binder, quarantine)
        reconciler, audit = self._local_api(state)

        for folder in cfg.ingest.folder:
            pattern = re.compile(folder.filename_pattern) if folder.filename_pattern else None
            intake = Intake(
                source=folder.name,
                pattern=pattern,
                converter=converter,
                spool=self.spool,
                quarantine=quarantine,
                clock=self.clock,
                logger=logging.getLogger(f"gateway.ingest.{folder.name}"),
                binder=binder,
                sidecar_settle_seconds=folder.settle_seconds,
                root=folder.path,
            )
            watcher = FolderWatcher(
                folder, intake, self.clock, logging.getLogger(f"gateway.watch.{folder.name}")
            )
            self.watchers.append(watcher)
            self.supervisor.add(f"watch:{folder.name}", watcher.start, watcher.stop)

        if any(f.ftp_user for f in cfg.ingest.folder):
            self._ftp(state)

        if cfg.web.enabled:
            admit = receiver.admit if receiver is not None else None
            desk = QuarantineDesk.for_config(cfg, quarantine, self.spool, admit, audit, self.clock)
            self._web(reconciler, audit, desk)

    def _worklist(self, state: Path) -> tuple[Binder, ListenerService | None]:
        """Cache, refresher and MWL service with [worklist]; the binder for file drops."""
        cfg = self.config
        wl = cfg.worklist
        if wl is None:
            return Binder(None, None, require_match=False), None
        cache = WorklistCache(state / WORKLIST_CACHE_FILE, self.clock, wl.expire_grace_hours)
        self.worklist_cache = cache
        ctx = client_context(wl.tls, self.credentials_dir) if wl.tls else None
        client = WorklistClient(wl, cfg.gateway.ae_title, ctx)
        self.refresher = WorklistRefresher(
            client, cache, wl, self.clock, logging.getLogger("gateway.worklist")
        )
        mwl = MwlService(
            cache,
            client,
            wl.live_query_timeout,
            logging.getLogger("gateway.mwl"),
            query_charset_fallback=wl.character_set,
            clock=self.clock,
        )

        def open_cache() -> None:
            self.notifier.extend_timeout(START_STEP_ALLOWANCE)
            cache.open()
            mwl.prepare()

        self.supervisor.add("worklist-cache", open_cache, cache.close)
        selection = RoomSelection(selection_path(state), self.clock, wl.selection_expires_minutes)
        self.room_selection = selection
        service = ListenerService(
            "mwl",
            (MODALITY_WORKLIST_FIND,),
            (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
            ((evt.EVT_C_FIND, mwl.handle_find),),
        )
        return Binder(cache, selection, wl.require_match), service

    def _serial(
        self,
        settings: ConvertSettings,
        grouper: StudyGrouper,
        uids: UidFactory,
        binder: Binder,
        quarantine: Quarantine,
    ) -> None:
        """One port thread per [[ingest.serial]]; a bad profile stops the start (ConfigError)."""
        for line in self.config.ingest.serial:
            profile = load_profile(line.profile)
            logger = logging.getLogger(f"gateway.serial.{line.name}")
            intake = SerialIntake(
                source=line.name,
                converter=SerialConverter(settings, grouper, uids, profile),
                spool=self.spool,
                quarantine=quarantine,
                binder=binder,
                clock=self.clock,
                logger=logger,
                port=line.port,
            )
            reader = SerialReader(
                source=line.name,
                port=SerialPort(line, self.clock, logger),
                engine_factory=partial(make_engine, profile, line.name, line.max_message_bytes),
                sink=intake,
                clock=self.clock,
                logger=logger,
            )
            self.serial_readers.append(reader)
            self.supervisor.add_thread(f"serial:{line.name}", reader.run)

    def _local_api(self, state: Path) -> tuple[Reconciler, AuditLog]:
        """The JSON API for operators on this box; the web panel mounts the same routes."""
        cfg = self.config
        audit = AuditLog(state / AUDIT_FILE, self.clock)
        lookup = self.worklist_cache if self.worklist_cache is not None else EmptyWorklist()
        reconciler = Reconciler(self.spool, lookup, audit, self.spool.staging_dir, self.clock)
        services = ApiServices(
            reconciler=reconciler,
            audit=audit,
            worklist=self.worklist_cache,
            refresher=self.refresher,
            selection=self.room_selection,
            selection_expires_minutes=(
                cfg.worklist.selection_expires_minutes if cfg.worklist else 240.0
            ),
        )
        api = LocalApiServer(
            create_api(services, peer_actor),
            cfg.gateway.api_socket or socket_path(state),
            logging.getLogger("gateway.api"),
        )
        self.local_api = api

        def start_api() -> None:
            # The API is for operators; a socket that cannot be made must not stop the images.
            try:
                api.start()
            except (LocalApiError, OSError) as exc:
                event(log, logging.ERROR, "local API not available", reason=str(exc))

        self.supervisor.add("local-api", start_api, api.stop)
        return reconciler, audit

    def _deferred_restart(self) -> Callable[[], None]:
        """The panel's restart, a moment later: its answer (and the page it redirects to) must
        reach the browser before the server goes down."""
        restart = self.request_restart
        assert restart is not None

        def now() -> None:
            self.restarting = True  # told to systemd as a reload when the loop ends
            restart()

        def later() -> None:
            timer = threading.Timer(RESTART_GRACE_SECONDS, now)
            timer.daemon = True
            timer.start()

        return later

    def _web(self, reconciler: Reconciler, audit: AuditLog, quarantine: QuarantineDesk) -> None:
        """The HTTPS panel, last to start and first to stop; it only reads and drives the rest."""
        cfg = self.config
        services = WebServices(
            config_path=self.config_path or Path("gateway.toml"),
            config=cfg,
            credentials_dir=self.credentials_dir,
            clock=self.clock,
            started_at=self.clock.now(),
            version=gateway_version,
            spool=self.spool,
            reconciler=reconciler,
            audit=audit,
            worklist=self.worklist_cache,
            refresher=self.refresher,
            selection=self.room_selection,
            watchers={f.name: w for f, w in zip(cfg.ingest.folder, self.watchers, strict=True)},
            serial_readers={r.source: r for r in self.serial_readers},
            lanes={lane.destination: lane for lane in self.lanes},
            listener=self.listener,
            quarantine=quarantine,
            request_restart=self._deferred_restart() if self.request_restart else None,
        )
        panel = WebPanel(services, logging.getLogger("gateway.web"))
        self.web_panel = panel

        def start_web() -> None:
            # Like the local API: a panel that cannot start must never stop the images.
            try:
                panel.start()
            except (ServerStartError, CertificateError, OSError, sqlite3.Error) as exc:
                event(log, logging.ERROR, "web panel not available", reason=str(exc))

        self.supervisor.add("web", start_web, panel.stop)

    def _ftp(self, state: Path) -> None:
        """The FTP receiver: a listening step, then its loop as a supervised thread.

        Like the panel, a receiver that cannot listen (port taken, no certificate) is logged and
        the rest runs on: the queue still drains and the other sources still ingest.
        """
        cfg = self.config
        homes = {f.ftp_user: f.path for f in cfg.ingest.folder if f.ftp_user}
        logger = logging.getLogger("gateway.ftp")
        receiver = FtpReceiver(cfg.ingest.ftp, homes, FtpAccounts(ftp_dir(state)), logger)
        self.ftp_receiver = receiver

        def listen() -> None:
            tls: ssl.SSLContext | None = None
            try:
                # The box's certificate: the panel's own (made here first if need be).
                cert = ensure_certificate(state, cfg.web, self.credentials_dir)
                tls = ftps_context(cert.cert, cert.key)
            except (CertificateError, OSError, ssl.SSLError) as exc:
                event(log, logging.ERROR, "ftp receiver has no certificate", reason=str(exc))
            try:
                receiver.listen(tls)
            except (OSError, ValueError) as exc:
                event(log, logging.ERROR, "ftp receiver not available", reason=str(exc))

        self.supervisor.add("ftp-listen", listen, receiver.close)
        self.supervisor.add_thread("ftp", receiver.serve)

    def _listener(
        self, quarantine: Quarantine, mwl: ListenerService | None
    ) -> StoreReceiver | None:
        """Our DICOM port; the storage receiver when it takes C-STOREs."""
        cfg = self.config
        lst = cfg.dicom_listener
        assert lst is not None
        services = [mwl] if mwl is not None else []
        receiver = None
        if lst.storage:
            prepare = None
            if lst.coerce_from_worklist and self.worklist_cache is not None:
                # No room selection and no required match: a DICOM modality's own identity
                # stands unless the worklist names its order.
                prepare = WorklistCoercion(Binder(self.worklist_cache, None, require_match=False))
            receiver = StoreReceiver(
                self.spool,
                quarantine,
                prepare=prepare,
                logger=logging.getLogger("gateway.receiver"),
            )
            services.append(receiver.service())
        ctx = server_context(lst.tls, self.credentials_dir) if lst.tls else None
        self.listener = DicomListener(
            lst, cfg.gateway.ae_title, ctx, services, logging.getLogger("gateway.listener")
        )
        self.supervisor.add("listener", self.listener.start, self.listener.stop)
        return receiver

    def _mark_ready(self) -> None:
        # The trial check of a newly installed release waits for this marker.
        marker = ReadyMarker(pid=os.getpid(), at=self.clock.now(), version=gateway_version)
        try:
            mark_ready(self.config.gateway.state_dir, marker)
        except OSError as exc:
            event(log, logging.ERROR, "cannot write the ready marker", error=str(exc))

    def status_line(self) -> str:
        """One line for systemd's STATUS=: queue depth per destination, held and failed counts."""
        parts = []
        held = 0
        for name, stats in sorted(_queue_stats(self.spool).items()):
            counts = stats.counts
            pending = counts.get(DeliveryState.PENDING, 0) + counts.get(DeliveryState.SENDING, 0)
            failed = counts.get(DeliveryState.FAILED, 0)
            held = max(held, counts.get(DeliveryState.HELD, 0))
            parts.append(f"{name}: {pending} queued, {failed} failed")
        if held:
            parts.append(f"{held} held")
        parts += destination_conditions([lane.status for lane in self.lanes], self.clock.now())
        down = [r.source for r in self.serial_readers if not r.port.is_open]
        if down:
            parts.append(f"serial port down: {', '.join(down)}")
        if self.refresher is not None:
            parts.append(_worklist_status(self.refresher, self.clock.now()))
        storage = storage_status_line(self.spool)
        if storage:
            parts.insert(0, storage)
        return "; ".join(parts) or "no destination configured"

    def run(self, stop: threading.Event) -> int:
        """Start everything, report READY, run until ``stop`` is set; return an exit code."""
        try:
            self.supervisor.start_all()
        except Exception as exc:  # noqa: BLE001 - any start failure ends the run with a reason
            event(log, logging.CRITICAL, "gateway failed to start", reason=str(exc))
            return 1
        self.notifier.ready(self.status_line())
        self.reached_ready = True
        self._mark_ready()
        if self.on_ready is not None:
            self.on_ready()
        event(log, logging.INFO, "gateway ready", services=",".join(self.supervisor.names))
        code = 0
        tick = min(
            self.status_interval,
            self.notifier.watchdog_interval or self.status_interval,
        )
        last_status = self.clock.monotonic()
        try:
            while not stop.wait(tick):
                self.supervisor.check()
                if self.notifier.watchdog_interval:
                    self.notifier.watchdog()
                if self.clock.monotonic() - last_status >= self.status_interval:
                    self.notifier.status(self.status_line())
                    last_status = self.clock.monotonic()
        except RestartBudgetExceededError as exc:
            event(log, logging.CRITICAL, "giving up", reason=str(exc))
            code = 1
        if self.restarting and code == 0 and self.restart_wanted():
            self.notifier.reloading(RESTART_ALLOWANCE)  # same PID, READY=1 again (gateway.notify)
        else:
            self.notifier.stopping()
        event(log, logging.INFO, "gateway stopping")
        self.supervisor.stop_all()
        event(log, logging.INFO, "gateway stopped")
        return code


def destination_conditions(statuses: list[LaneStatus], now: float) -> list[str]:
    """STATUS= parts for destinations not delivering: ``pacs paused: <reason>``, and so on.

    Paused and rejected carry their reason: a person must act on it (the advice is in it).
    """
    parts = []
    for status in statuses:
        if status.condition is Condition.OK:
            continue
        since = "" if status.since is None else f" for {duration(now - status.since)}"
        text = f"{status.destination} {status.condition.replace('_', ' ')}{since}"
        if status.condition in (Condition.PAUSED, Condition.REJECTED):
            text += f": {status.reason}"
        parts.append(text)
    return parts


def storage_status_line(spool: Spool) -> str:
    """The state storage's part of STATUS= ("" while all is well): gateway.spool.space.describe."""
    return describe_storage(spool.storage_status())


def _queue_stats(spool: Spool) -> dict[str, DestinationStats]:
    """The queue's counts, or none while the state storage keeps the queue closed."""
    with contextlib.suppress(StorageNotReadyError):
        return spool.stats()
    return {}


def _worklist_status(refresher: WorklistRefresher, now: float) -> str:
    if refresher.last_success is None:
        return "worklist: not fetched yet" + (" (RIS unreachable)" if refresher.last_error else "")
    age = f"{(now - refresher.last_success) / 60:.0f} min old"
    return f"worklist {age}" + (", RIS unreachable" if refresher.last_error else "")
