"""`dicom-gateway update ...`: check for a signed release, apply it, show the update state.

``update check`` asks the repository and says what it would install and why the other releases
are passed over. ``update apply`` finishes an interrupted install first, then checks, tests the
preconditions, downloads (resuming), tests them again and hands the verified bundle to the
installer, which switches releases and runs the trial start. ``--offline PATH`` reads a
repository copied onto a USB stick instead of the server; every check is the same.
``update status`` shows the install state, the floor and the blacklist. ``update trial-check``
is the health check of a new release (systemd's dicom-gateway-healthcheck.service).

Exit codes: 0 done (or nothing to do); 1 refused (tampered in any form, replayed, expired or
invalid metadata, a bundle that does not match, a rolled-back release); 2 usage or config
error; 75 try later (repository unreachable, preconditions not met). With ``--from-timer``
"try later" exits 0, so the timer's unit does not turn red for a busy box or a network outage;
a refusal still exits 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway import __version__
from gateway.audit import cli_actor
from gateway.clock import Clock, SystemClock
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.update import preconditions
from gateway.update.audit import UpdateAudit
from gateway.update.client import (
    BoxState,
    RepositoryRejectedError,
    UpdateClient,
    UpdateError,
    UpdateOffer,
    UpdateSettings,
    device_id,
    trusted_root_bytes,
)
from gateway.update.fetch import BundleRejectedError
from gateway.update.offline import offline_settings

EX_TEMPFAIL = 75
INSTALL_ROOT = Path("/opt/dicom-gateway")
GATEWAY_UNIT = "dicom-gateway.service"
log = logging.getLogger("gateway.update")


class Outcome(Protocol):
    """What the installer reports (gateway.update.installer.InstallOutcome)."""

    @property
    def version(self) -> str: ...

    @property
    def result(self) -> str: ...

    @property
    def reason(self) -> str: ...


class InstallerLike(Protocol):
    """The part of gateway.update.installer.Installer this command drives."""

    def resume(self, *, gateway_starting: bool = False) -> Outcome | None: ...

    def downloading(self, offer: UpdateOffer) -> None: ...

    def install(self, bundle_path: Path, offer: UpdateOffer) -> Outcome: ...


@dataclass(frozen=True)
class UpdateContext:
    """Everything one update command needs, resolved from the config and the options."""

    config_path: Path
    state_dir: Path
    install_root: Path
    settings: UpdateSettings
    clock: Clock
    actor: str


InstallerFactory = Callable[[UpdateContext], InstallerLike]


def systemd_restart() -> None:
    """Restart the gateway without waiting for it: the trial start watches it come up."""
    # A release that crash-looped may have hit the start limit: clear it so the restart runs.
    subprocess.run(["systemctl", "reset-failed", GATEWAY_UNIT], check=False)
    subprocess.run(["systemctl", "restart", "--no-block", GATEWAY_UNIT], check=True)


def default_installer(ctx: UpdateContext) -> InstallerLike:
    """The real installer: releases under the install root, restart through systemd."""
    from gateway.update.installer import Installer
    from gateway.update.selftest import selftest_probe

    installer: InstallerLike = Installer(
        ctx.install_root / "releases",
        ctx.install_root / "current",
        ctx.state_dir,
        ctx.clock,
        log,
        systemd_restart,
        probe=selftest_probe(ctx.config_path, ctx.state_dir, ctx.clock),
    )
    return installer


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    make_installer: InstallerFactory = default_installer,
) -> None:
    """Add ``update check|apply|status|trial-check`` to the ``dicom-gateway`` parser."""
    from gateway.cli import DEFAULT_CONFIG

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="TOML config file")
    common.add_argument(
        "--install-root",
        type=Path,
        default=None,
        help=f"holds releases/ and the current symlink (default: [update] install_root, "
        f"{INSTALL_ROOT})",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("--offline", type=Path, metavar="PATH", help="repository on a USB stick")
    source.add_argument("--repository-url", help="override [update] repository_url")
    source.add_argument("--channel", choices=["stable", "beta"], help="override [update] channel")
    source.add_argument("--hardware", help="override [update] hardware")
    source.add_argument(
        "--trusted-root", type=Path, help="root.json to trust instead of the one built in (lab)"
    )

    update = subparsers.add_parser("update", help="signed software updates")
    sub = update.add_subparsers(dest="update_cmd", required=True)
    check = sub.add_parser(
        "check", help="is there a release for this box?", parents=[common, source]
    )
    check.set_defaults(func=lambda a: _run(a, cmd_check, make_installer))
    apply = sub.add_parser("apply", help="install the release offered", parents=[common, source])
    apply.add_argument("--from-timer", action="store_true", help="run by the update timer")
    apply.set_defaults(func=lambda a: _run(a, cmd_apply, make_installer))
    status = sub.add_parser("status", help="install state, floor, blacklist", parents=[common])
    status.set_defaults(func=lambda a: _run(a, cmd_status, make_installer))
    trial = sub.add_parser(
        "trial-check", help="health check of a release on trial (systemd)", parents=[common]
    )
    trial.set_defaults(func=lambda a: _run(a, cmd_trial_check, make_installer))
    resume = sub.add_parser(
        "resume",
        help="finish an interrupted install (systemd runs it before the gateway starts)",
        parents=[common],
    )
    resume.add_argument(
        "--gateway-starting",
        action="store_true",
        help="the gateway is about to start: a release past its trial deadline is rolled back",
    )
    resume.set_defaults(func=lambda a: _run(a, cmd_resume, make_installer))


Command = Callable[[argparse.Namespace, UpdateContext, InstallerFactory], int]


def _run(args: argparse.Namespace, command: Command, make_installer: InstallerFactory) -> int:
    config_path = Path(args.config)
    config = load_config(config_path, os.environ.get("CREDENTIALS_DIRECTORY"))
    try:
        settings = _settings(config, args)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    ctx = UpdateContext(
        config_path,
        config.gateway.state_dir,
        args.install_root or config.update.install_root,
        settings,
        SystemClock(),
        "timer" if getattr(args, "from_timer", False) else cli_actor(),
    )
    return command(args, ctx, make_installer)


def _settings(config: GatewayConfig, args: argparse.Namespace) -> UpdateSettings:
    """[update] from the config (when the config has it), then the command line on top."""
    section = config.update
    fields: dict[str, Any] = {"repository_url": ""}
    if section is not None:
        for name in ("repository_url", "channel", "hardware", "maintenance_window"):
            value = getattr(section, name, None)
            if value is not None:
                fields[name] = str(value)
    for name in ("repository_url", "channel", "hardware"):
        value = getattr(args, name, None)
        if value:
            fields[name] = value
    settings = UpdateSettings(**fields)
    if settings.maintenance_window:
        preconditions.MaintenanceWindow.parse(settings.maintenance_window)  # fail before work
    offline = getattr(args, "offline", None)
    if offline is not None:
        return offline_settings(settings, offline)
    if not settings.repository_url and args.update_cmd in ("check", "apply"):
        raise ValueError("update: no repository_url in [update] (or use --offline PATH)")
    return settings


def _client(args: argparse.Namespace, ctx: UpdateContext) -> UpdateClient:
    from gateway.update.status import read_blacklist, read_floor

    root = args.trusted_root.read_bytes() if args.trusted_root else trusted_root_bytes()
    box = BoxState(
        installed=__version__,
        floor=read_floor(ctx.state_dir),
        blacklist=frozenset(read_blacklist(ctx.state_dir)),
        device_id=device_id(ctx.state_dir),
    )
    return UpdateClient(
        ctx.settings, ctx.state_dir, root, box, UpdateAudit(ctx.state_dir, ctx.clock, ctx.actor)
    )


def cmd_check(args: argparse.Namespace, ctx: UpdateContext, _installer: InstallerFactory) -> int:
    """Say what would be installed, and why each other release is not."""
    try:
        result = _client(args, ctx).evaluate()
    except UpdateError as exc:
        return _failed(exc, from_timer=False)
    offer = result.offer
    if args.json:
        print(json.dumps(_jsonable(result), indent=2))
        return 0
    print(f"installed: {__version__}")
    if offer is None:
        print("up to date: no release for this box")
    else:
        print(
            f"offer: {offer.version} ({offer.target_name}, {offer.length} bytes, "
            f"sha256 {offer.hashes.get('sha256', '?')}, rollout {offer.rollout} %, "
            f"bucket {offer.bucket})"
        )
    for skipped in result.skipped:
        print(f"  skipped {skipped.target}: {skipped.reason}")
    return 0


def cmd_apply(
    args: argparse.Namespace, ctx: UpdateContext, make_installer: InstallerFactory
) -> int:
    """Finish an interrupted install, then check, download, verify and install."""
    installer = make_installer(ctx)
    unfinished = installer.resume()
    if unfinished is not None and unfinished.result == "pending":
        print(f"release {unfinished.version} is on trial: {unfinished.reason}")
        return 0
    try:
        client = _client(args, ctx)
        offer = client.check()
    except UpdateError as exc:
        return _failed(exc, from_timer=args.from_timer)
    if offer is None:
        print(f"up to date ({__version__})")
        return 0
    audit = UpdateAudit(ctx.state_dir, ctx.clock, ctx.actor)
    if not _preconditions_met(ctx, offer, audit, "before download"):
        return 0 if args.from_timer else EX_TEMPFAIL
    installer.downloading(offer)
    try:
        download = client.download(offer)
    except (UpdateError, BundleRejectedError) as exc:
        return _failed(exc, from_timer=args.from_timer)
    if not _preconditions_met(ctx, offer, audit, "before install"):
        return 0 if args.from_timer else EX_TEMPFAIL
    outcome = installer.install(download.path, offer)
    print(
        f"{outcome.version}: {outcome.result}" + (f" ({outcome.reason})" if outcome.reason else "")
    )
    return 0 if outcome.result in ("committed", "pending") else 1


def cmd_status(args: argparse.Namespace, ctx: UpdateContext, _installer: InstallerFactory) -> int:
    """The install state, floor and blacklist, and the last check."""
    from gateway.update.status import read_status

    status = read_status(ctx.state_dir)
    checks = [
        r
        for r in UpdateAudit(ctx.state_dir, ctx.clock, ctx.actor).read(200)
        if r.action == "update.check"
    ]
    last = checks[-1] if checks else None
    view = {
        "installed": __version__,
        "install": _jsonable(status),
        "last_check": None
        if last is None
        else {
            "at": last.at,
            "result": last.details.get("result"),
            "target": last.target,
            "reason": last.details.get("reason"),
        },
    }
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"installed: {__version__}")
    if status.state is None:
        print("install: none by the updater")
    else:
        print(
            f"install: {status.version} {status.state}"
            + (f", {status.result}" if status.result else "")
            + (f": {status.reason}" if status.reason else "")
        )
    print(f"floor: {status.floor or 'none'}")
    for version, reason in sorted(status.blacklist.items()):
        print(f"blacklisted: {version}: {reason}")
    if last is not None:
        why = last.details.get("reason")
        print(
            f"last check: {last.at} {last.details.get('result')} {last.target}"
            + (f" ({why})" if why else "")
        )
    return 0


def cmd_trial_check(
    args: argparse.Namespace, ctx: UpdateContext, make_installer: InstallerFactory
) -> int:
    """Drive the release on trial to its verdict (the installer polls the self-test)."""
    outcome = make_installer(ctx).resume()
    if outcome is None:
        print("no release on trial")
        return 0
    print(
        f"{outcome.version}: {outcome.result}" + (f" ({outcome.reason})" if outcome.reason else "")
    )
    return 1 if outcome.result in ("rolled_back", "failed") else 0


def cmd_resume(
    args: argparse.Namespace, ctx: UpdateContext, make_installer: InstallerFactory
) -> int:
    """Bring an interrupted install to a stable state; never stops the gateway from starting."""
    outcome = make_installer(ctx).resume(gateway_starting=args.gateway_starting)
    if outcome is None:
        return 0
    print(
        f"{outcome.version}: {outcome.result}" + (f" ({outcome.reason})" if outcome.reason else "")
    )
    return 0


def _preconditions_met(
    ctx: UpdateContext, offer: UpdateOffer, audit: UpdateAudit, when: str
) -> bool:
    window_text = ctx.settings.maintenance_window
    window = preconditions.MaintenanceWindow.parse(window_text) if window_text else None
    report = preconditions.evaluate(
        bundle_size=offer.length,
        releases_root=ctx.install_root / "releases",
        state_dir=ctx.state_dir,
        window=window,
        clock=ctx.clock,
    )
    if report.ok:
        return True
    audit.record(
        "update.deferred",
        offer.version,
        "deferred",
        {"when": when, "reasons": list(report.reasons)},
    )
    print(f"not now ({when}):")
    for reason in report.reasons:
        print(f"  {reason}")
    return False


def _failed(exc: Exception, *, from_timer: bool) -> int:
    refused = isinstance(exc, RepositoryRejectedError | BundleRejectedError)
    print(f"{'refused' if refused else 'try later'}: {exc}", file=sys.stderr)
    if refused:
        return 1
    return 0 if from_timer else EX_TEMPFAIL


def _jsonable(obj: object) -> object:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | frozenset | set):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "items"):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj
