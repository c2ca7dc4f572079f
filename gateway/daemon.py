"""The running gateway: every component built from the config and owned by the supervisor.

Start order (stop order is the reverse):
  1. spool      - the queue opens and recovers (in-flight deliveries go back to pending)
  2. grouping   - the study grouping table opens
  3. lane:NAME  - one delivery thread per destination
  4. watch:NAME - one folder watcher per drop folder; from here on files are taken
Then READY=1 goes to systemd, and the main loop sends STATUS= and WATCHDOG=1 and restarts
threads that died, within a budget.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.config import GatewayConfig, default_max_queue_bytes
from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.settings import ConvertSettings
from gateway.convert.uids import UidFactory
from gateway.forward.backoff import Backoff
from gateway.forward.lane import DeliveryLane
from gateway.forward.sender import StoreSender
from gateway.forward.tlsctx import client_context
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.intake import Intake
from gateway.ingest.quarantine import Quarantine
from gateway.logsetup import event
from gateway.notify import SystemdNotifier
from gateway.spool.entries import DeliveryState
from gateway.spool.store import Spool
from gateway.supervisor import RestartBudgetExceededError, Supervisor

log = logging.getLogger("gateway.daemon")


@dataclass
class Gateway:
    """Builds the components from a config and runs them under one supervisor."""

    config: GatewayConfig
    clock: Clock
    notifier: SystemdNotifier
    credentials_dir: str | None = None
    status_interval: float = 10.0
    supervisor: Supervisor = field(init=False)
    spool: Spool = field(init=False)
    watchers: list[FolderWatcher] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.config
        state = cfg.gateway.state_dir
        self.supervisor = Supervisor(self.clock)
        max_bytes = cfg.gateway.max_queue_bytes or default_max_queue_bytes(state)
        self.spool = Spool(state, [d.name for d in cfg.destination], max_bytes, self.clock)
        uids = UidFactory(cfg.gateway.uid_root)
        settings = ConvertSettings.from_config(cfg)
        grouper = StudyGrouper(state / "grouping.sqlite", settings.study_window_seconds, uids)
        converter = Converter(settings, grouper, uids)
        quarantine = Quarantine(state / "quarantine", self.clock)

        def open_spool() -> None:
            state.mkdir(parents=True, exist_ok=True)
            self.spool.open()

        self.supervisor.add("spool", open_spool, self.spool.close)
        self.supervisor.add("grouping", grouper.open, grouper.close)

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
            self.supervisor.add_thread(f"lane:{dest.name}", lane.run)

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
            )
            watcher = FolderWatcher(
                folder, intake, self.clock, logging.getLogger(f"gateway.watch.{folder.name}")
            )
            self.watchers.append(watcher)
            self.supervisor.add(f"watch:{folder.name}", watcher.start, watcher.stop)

    def status_line(self) -> str:
        """One line for systemd's STATUS=: queue depth per destination, held and failed counts."""
        parts = []
        held = 0
        for name, stats in sorted(self.spool.stats().items()):
            counts = stats.counts
            pending = counts.get(DeliveryState.PENDING, 0) + counts.get(DeliveryState.SENDING, 0)
            failed = counts.get(DeliveryState.FAILED, 0)
            held = max(held, counts.get(DeliveryState.HELD, 0))
            parts.append(f"{name}: {pending} queued, {failed} failed")
        if held:
            parts.append(f"{held} held")
        return "; ".join(parts) or "no destination configured"

    def run(self, stop: threading.Event) -> int:
        """Start everything, report READY, run until ``stop`` is set; return an exit code."""
        try:
            self.supervisor.start_all()
        except Exception as exc:  # noqa: BLE001 - any start failure ends the run with a reason
            event(log, logging.CRITICAL, "gateway failed to start", reason=str(exc))
            return 1
        self.notifier.ready(self.status_line())
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
        self.notifier.stopping()
        event(log, logging.INFO, "gateway stopping")
        self.supervisor.stop_all()
        event(log, logging.INFO, "gateway stopped")
        return code
