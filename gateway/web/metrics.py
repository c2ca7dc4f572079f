"""GET /metrics: Prometheus text format, read from the running parts at scrape time.

Nothing is counted twice: the collector asks the spool, the listener, the serial readers, the
folder watchers and the worklist cache when Prometheus scrapes, so the numbers survive a panel
restart exactly as far as the parts' own numbers do. Only names of destinations and sources,
states and counts: no patient data, no UIDs.

Access: a signed-in engineer (a browser), or ``Authorization: Bearer <token>`` with the token
in ``<state_dir>/web/metrics-token`` (0600, made at the panel's first start; replace the file's
content to rotate it, no restart needed). Anyone else gets 401: queue depths and source names
say what the room is doing, so they are not public.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gateway.forward.condition import Condition
from gateway.spool.entries import DeliveryState
from gateway.storagefault import StorageFault, StorageNotReadyError
from gateway.update.status import read_status
from gateway.web.auth.db import web_dir, write_private
from gateway.web.auth.users import Role
from gateway.web.deps import optional_user
from gateway.web.services import WebServices

TOKEN_FILE = "metrics-token"  # noqa: S105 - a file name, not a secret
PREFIX = "dicom_gateway"


def metrics_token_path(state_dir: Path) -> Path:
    """Where the scrape token is kept."""
    return web_dir(state_dir) / TOKEN_FILE


def ensure_metrics_token(state_dir: Path) -> Path:
    """Make the scrape token file (0600) if there is none; returns its path."""
    path = metrics_token_path(state_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_urlsafe(32) + "\n")
    return path


class GatewayCollector(Collector):
    """Reads WebServices at each scrape."""

    def __init__(self, services: WebServices) -> None:
        self._s = services

    def collect(self) -> Iterator[Metric]:
        """Every metric family, from the parts as they are now."""
        with contextlib.suppress(StorageNotReadyError):  # the queue is closed: no counts
            yield from self._queue()
        yield from self._conditions()
        yield from self._storage()
        yield from self._sources()
        with contextlib.suppress(OSError):  # the state storage fails: no quarantine counts
            yield from self._quarantine()
        yield from self._worklist()
        yield from self._update()
        up = GaugeMetricFamily(f"{PREFIX}_start_time_seconds", "When the gateway started.")
        up.add_metric([], self._s.started_at)
        yield up
        info = GaugeMetricFamily(f"{PREFIX}_info", "The gateway's version.", labels=["version"])
        info.add_metric([self._s.version], 1.0)
        yield info

    def _queue(self) -> Iterator[Metric]:
        now = self._s.clock.now()
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_deliveries",
            "Deliveries per destination and state (sent and failed included).",
            labels=["destination", "state"],
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_pending_age_seconds",
            "Age of the oldest pending or sending delivery (0 when none waits).",
            labels=["destination"],
        )
        pending_bytes = GaugeMetricFamily(
            f"{PREFIX}_queue_pending_bytes",
            "Payload bytes still to send (held, pending, sending).",
            labels=["destination"],
        )
        success = GaugeMetricFamily(
            f"{PREFIX}_destination_last_success_timestamp_seconds",
            "When the destination last confirmed a C-STORE.",
            labels=["destination"],
        )
        error = GaugeMetricFamily(
            f"{PREFIX}_destination_last_error_timestamp_seconds",
            "When a delivery to the destination last failed (association or refusal).",
            labels=["destination"],
        )
        held = GaugeMetricFamily(f"{PREFIX}_held_objects", "Objects held for reconciliation.")
        most_held = 0
        for name, stats in sorted(self._s.spool.stats().items()):
            for state in DeliveryState:
                depth.add_metric([name, str(state)], float(stats.counts.get(state, 0)))
            waited = 0.0 if stats.oldest_pending_at is None else now - stats.oldest_pending_at
            oldest.add_metric([name], max(0.0, waited))
            pending_bytes.add_metric([name], float(stats.bytes_pending))
            if stats.last_success_at is not None:
                success.add_metric([name], stats.last_success_at)
            if stats.last_error_at is not None:
                error.add_metric([name], stats.last_error_at)
            most_held = max(most_held, stats.counts.get(DeliveryState.HELD, 0))
        held.add_metric([], float(most_held))
        yield from (depth, oldest, pending_bytes, success, error, held)

    def _conditions(self) -> Iterator[Metric]:
        condition = GaugeMetricFamily(
            f"{PREFIX}_destination_condition",
            "1 for the destination's condition now (ok, unreachable, out_of_resources, paused), "
            "0 for the others; paused means the PACS refuses what it must take (see the panel).",
            labels=["destination", "condition"],
        )
        attempts = GaugeMetricFamily(
            f"{PREFIX}_destination_outage_attempts",
            "Failed attempts of the destination's current outage (0 while ok).",
            labels=["destination"],
        )
        for name, lane in sorted(self._s.lanes.items()):
            status = lane.status
            for value in Condition:
                condition.add_metric([name, str(value)], float(status.condition is value))
            attempts.add_metric([name], float(status.attempts))
        yield condition
        yield attempts

    def _storage(self) -> Iterator[Metric]:
        status = self._s.spool.storage_status()
        fault = GaugeMetricFamily(
            f"{PREFIX}_state_storage_fault",
            "1 while the state storage has this fault (full, read-only, I/O error), else 0.",
            labels=["fault"],
        )
        for kind in StorageFault:
            fault.add_metric([str(kind)], 1.0 if status.fault is kind else 0.0)
        free = GaugeMetricFamily(
            f"{PREFIX}_state_free_bytes",
            "Free bytes of the state_dir filesystem.",
            value=float(status.space.free),
        )
        low = GaugeMetricFamily(
            f"{PREFIX}_state_low_water_bytes",
            "Free bytes below which ingest pauses (min_free_bytes).",
            value=float(status.low_water),
        )
        paused = GaugeMetricFamily(
            f"{PREFIX}_ingest_paused_by_storage",
            "1 while ingest is paused for the state storage (low, full, read-only, failing).",
            value=0.0 if status.ingest.ok or not status.ingest.disk else 1.0,
        )
        reserve = GaugeMetricFamily(
            f"{PREFIX}_delivery_reserve_in_place",
            "1 while the delivery reserve is allocated, 0 while it is given back (disk full).",
            value=1.0 if status.reserve_in_place else 0.0,
        )
        unrecorded = GaugeMetricFamily(
            f"{PREFIX}_unrecorded_deliveries",
            "Delivery outcomes kept in memory until the state storage takes them.",
            value=float(status.unrecorded),
        )
        yield from (fault, free, low, paused, reserve, unrecorded)

    def _sources(self) -> Iterator[Metric]:
        folder = GaugeMetricFamily(
            f"{PREFIX}_folder_last_activity_timestamp_seconds",
            "When the watched folder last handed a file over.",
            labels=["source"],
        )
        for name, watcher in sorted(self._s.watchers.items()):
            if watcher.last_activity is not None:
                folder.add_metric([name], watcher.last_activity)
        yield folder
        serial = CounterMetricFamily(
            f"{PREFIX}_serial_events",
            "Serial port counters since start (delivered = messages queued).",
            labels=["source", "event"],
        )
        for name, reader in sorted(self._s.serial_readers.items()):
            for event, value in sorted(reader.stats().items()):
                serial.add_metric([name, event], float(value))
        yield serial
        listener = CounterMetricFamily(
            f"{PREFIX}_listener_associations",
            "DICOM listener associations since start, by outcome (refusals, TLS and timeouts).",
            labels=["outcome"],
        )
        active = GaugeMetricFamily(
            f"{PREFIX}_listener_active_associations", "Associations being served now."
        )
        if self._s.listener is not None:
            for outcome, value in sorted(self._s.listener.stats().items()):
                if outcome == "active":
                    active.add_metric([], float(value))
                else:
                    listener.add_metric([outcome], float(value))
        yield listener
        yield active

    def _quarantine(self) -> Iterator[Metric]:
        desk = self._s.quarantine
        if desk is None:
            return
        counts = desk.counts()
        files = GaugeMetricFamily(
            f"{PREFIX}_quarantined_files",
            "Files in quarantine (not taken, kept with a reason), by how they came: file (a drop"
            " folder), dicom (C-STORE), serial, unrecorded (origin unknown).",
            labels=["channel"],
        )
        size = GaugeMetricFamily(
            f"{PREFIX}_quarantined_bytes", "Bytes in quarantine, by channel.", labels=["channel"]
        )
        for channel, (n, total) in sorted(counts.items()):
            files.add_metric([str(channel)], float(n))
            size.add_metric([str(channel)], float(total))
        yield files
        yield size

    def _worklist(self) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            f"{PREFIX}_worklist_age_seconds",
            "Seconds since the worklist cache was last filled from the RIS (absent: never).",
        )
        failing = GaugeMetricFamily(
            f"{PREFIX}_worklist_refresh_failing", "1 when the last worklist refresh failed."
        )
        cache, refresher = self._s.worklist, self._s.refresher
        if cache is not None and cache.fetched_at is not None:
            age.add_metric([], max(0.0, self._s.clock.now() - cache.fetched_at))
        if refresher is not None:
            failing.add_metric([], 1.0 if refresher.last_error else 0.0)
        yield age
        yield failing

    def _update(self) -> Iterator[Metric]:
        status = read_status(self._s.state_dir)
        last = GaugeMetricFamily(
            f"{PREFIX}_update_last_install",
            "The updater's last install: 1 for its version and result (committed, rolled_back, "
            "failed, or the state it is in).",
            labels=["version", "result"],
        )
        if status.version:
            last.add_metric([status.version, status.result or status.state or ""], 1.0)
        blacklisted = GaugeMetricFamily(
            f"{PREFIX}_update_blacklisted_releases",
            "Releases that failed their trial on this box and will not be offered again.",
        )
        blacklisted.add_metric([], float(len(status.blacklist)))
        yield last
        yield blacklisted


def metrics_text(services: WebServices) -> bytes:
    """The exposition text for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(services))
    return generate_latest(registry)


def _bearer_ok(request: Request, state_dir: Path) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, sent = header.partition(" ")
    if scheme.lower() != "bearer" or not sent:
        return False
    try:
        expected = metrics_token_path(state_dir).read_text("ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return bool(expected) and hmac.compare_digest(sent.strip(), expected)


def metrics_router(services: WebServices) -> APIRouter:
    """GET /metrics for an engineer's session or the scrape token."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not _bearer_ok(request, services.state_dir):
            user = optional_user(request)
            if user is None or user.role is not Role.ENGINEER:
                raise HTTPException(
                    401,
                    "an engineer's session or the scrape token is needed",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(metrics_text(services), media_type=CONTENT_TYPE_LATEST)

    return router
