"""The trial start's self-test: is the release just switched to really working?

Each check returns ``(ok, reason)``. A release passes its trial when all pass before the
deadline: it reached READY since the trial restart, its config loads, the queue opens (and its
schema migrates), our DICOM listener answers C-ECHO (when configured), and every PACS answers
C-ECHO or its queue is draining (delivered something since the restart, or has nothing to
send). A config or queue that fails is final at once; the others may still come good (a PACS
link takes a moment), so until the deadline they leave the verdict open.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.clock import Clock
from gateway.config import ConfigError, Destination, GatewayConfig, load_config
from gateway.forward.echo import echo
from gateway.forward.tlsctx import client_context
from gateway.spool.entries import DeliveryState
from gateway.spool.store import Spool
from gateway.update.installer import Probe, TrialContext, TrialVerdict
from gateway.update.status import read_ready

Check = tuple[bool, str]
EchoFn = Callable[[Destination, str], Check]


@dataclass(frozen=True)
class CheckResult:
    """One named check and its answer."""

    name: str
    ok: bool
    reason: str


def check_ready(state_dir: Path, since: float) -> Check:
    """The gateway wrote its READY marker after ``since`` (the trial's restart)."""
    marker = read_ready(state_dir)
    if marker is None:
        return False, "the gateway has not reported READY"
    if marker.at < since:
        return False, "the gateway has not reported READY since the restart"
    return True, f"READY (pid {marker.pid}, version {marker.version})"


def check_config(
    config_path: Path, credentials_dir: str | None
) -> tuple[Check, GatewayConfig | None]:
    """The configuration file loads and validates; the config when it does."""
    try:
        config = load_config(config_path, credentials_dir)
    except ConfigError as exc:
        return (False, f"config does not load: {exc}"), None
    except OSError as exc:
        return (False, f"config unreadable: {exc}"), None
    return (True, "config loads"), config


def check_queue(config: GatewayConfig, clock: Clock) -> Check:
    """The queue opens and its schema migrates (no recovery: the daemon owns that)."""
    spool = Spool(config.gateway.state_dir, [d.name for d in config.destination], 0, clock)
    try:
        spool.open(recover=False)
        spool.stats()
    except Exception as exc:  # noqa: BLE001 - any failure to open is the answer, not a crash
        return False, f"queue does not open: {type(exc).__name__}: {exc}"
    finally:
        spool.close()
    return True, "queue opens"


def check_listener(config: GatewayConfig, echo_fn: EchoFn) -> Check:
    """Our DICOM port answers C-ECHO on loopback (a TLS port: accepts a TCP connection)."""
    listener = config.dicom_listener
    if listener is None:
        return True, "no DICOM listener configured"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(  # noqa: S104
        listener.bind, listener.bind
    )
    if listener.tls is not None:
        # A TLS port wants a client certificate its CA signed, which the box need not hold.
        try:
            with socket.create_connection((host, listener.port), timeout=5.0):
                return True, f"listener port {listener.port} accepts connections (TLS)"
        except OSError as exc:
            return False, f"listener port {listener.port}: {exc}"
    calling = (listener.allowed_calling_ae_titles or [config.gateway.ae_title])[0]
    target = Destination(
        name="self", ae_title=config.gateway.ae_title, host=host, port=listener.port
    )
    ok, reason = echo_fn(target, calling)
    return ok, f"listener C-ECHO: {reason}"


def check_destinations(config: GatewayConfig, clock: Clock, since: float, echo_fn: EchoFn) -> Check:
    """Every PACS answers C-ECHO, or its queue drained something since ``since`` or is empty."""
    spool = Spool(config.gateway.state_dir, [d.name for d in config.destination], 0, clock)
    try:
        spool.open(recover=False)
        stats = spool.stats()
    finally:
        spool.close()
    problems: list[str] = []
    for dest in config.destination:
        ok, reason = echo_fn(dest, config.gateway.ae_title)
        if ok:
            continue
        lane = stats.get(dest.name)
        if lane is not None and lane.last_success_at is not None and lane.last_success_at >= since:
            continue
        waiting = 0
        if lane is not None:
            waiting = lane.counts.get(DeliveryState.PENDING, 0) + lane.counts.get(
                DeliveryState.SENDING, 0
            )
        if waiting == 0:
            continue
        problems.append(f"{dest.name}: {reason}, {waiting} waiting and none delivered")
    if problems:
        return False, "; ".join(problems)
    return True, "destinations reachable or draining"


def real_echo(credentials_dir: str | None) -> EchoFn:
    """C-ECHO through the forwarder's own connector (TLS as configured)."""

    def run(dest: Destination, calling: str) -> Check:
        ctx = client_context(dest.tls, credentials_dir) if dest.tls else None
        report = echo(dest, calling, ctx)
        return report.ok, report.reason

    return run


def run_selftest(
    config_path: Path,
    state_dir: Path,
    since: float,
    clock: Clock,
    *,
    credentials_dir: str | None = None,
    echo_fn: EchoFn | None = None,
) -> tuple[CheckResult, ...]:
    """Every check in order; stops after the config or the queue fails (the rest need them)."""
    echo_fn = echo_fn or real_echo(credentials_dir)
    results = [CheckResult("ready", *check_ready(state_dir, since))]
    (ok, reason), config = check_config(config_path, credentials_dir)
    results.append(CheckResult("config", ok, reason))
    if config is None:
        return tuple(results)
    results.append(CheckResult("queue", *check_queue(config, clock)))
    if not results[-1].ok:
        return tuple(results)
    results.append(CheckResult("listener", *check_listener(config, echo_fn)))
    results.append(CheckResult("destinations", *check_destinations(config, clock, since, echo_fn)))
    return tuple(results)


FINAL_CHECKS = frozenset({"config", "queue"})


def verdict(results: tuple[CheckResult, ...]) -> TrialVerdict:
    """Passed when all pass; failed at once on config or queue; otherwise not decided yet."""
    failed = [r for r in results if not r.ok]
    if not failed:
        return TrialVerdict(True, "self-test passed: " + ", ".join(r.name for r in results))
    reason = "; ".join(f"{r.name}: {r.reason}" for r in failed)
    if any(r.name in FINAL_CHECKS for r in failed):
        return TrialVerdict(False, reason)
    return TrialVerdict(None, reason)


def selftest_probe(
    config_path: Path,
    state_dir: Path,
    clock: Clock,
    *,
    credentials_dir: str | None = None,
    echo_fn: EchoFn | None = None,
) -> Probe:
    """The Installer's probe: the self-test against the release on trial."""
    creds = (
        credentials_dir if credentials_dir is not None else os.environ.get("CREDENTIALS_DIRECTORY")
    )

    def probe(context: TrialContext) -> TrialVerdict:
        results = run_selftest(
            config_path,
            state_dir,
            context.restarted_at,
            clock,
            credentials_dir=creds,
            echo_fn=echo_fn,
        )
        return verdict(results)

    return probe
