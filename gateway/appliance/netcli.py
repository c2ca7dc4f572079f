"""``dicom-gateway appliance network ...``: the root side's verbs, each with ``--root``.

``render`` (every boot, dicom-gateway-network.service), ``handle`` (the panel's requests,
dicom-gateway-network-apply.service), ``rollback-due`` (dicom-gateway-network-rollback.timer),
``apply``/``confirm`` (the same trial from a root shell), ``check`` (validate a network.toml, as
check-config does a gateway.toml) and ``status``. Exit status 0 when the step did what it was
asked (a rollback is such an outcome), 1 when it was refused or failed.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from gateway.appliance.netspool import handle_requests
from gateway.appliance.nettrial import (
    DEFAULT_CONFIRM_SECONDS,
    ROLLBACK_TIMER,
    SPOOL_DIR,
    CommandRunner,
    NetworkKeeper,
    NetworkStatus,
    read_boot_id,
    read_status,
)
from gateway.appliance.network import load_network
from gateway.audit import cli_actor
from gateway.clock import SystemClock
from gateway.config import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``network`` and its verbs to the ``appliance`` parser."""
    network = subparsers.add_parser("network", help="the box's network and time settings")
    verbs = network.add_subparsers(dest="network_verb", required=True)

    def verb(name: str, text: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=text)
        parser.add_argument("--root", type=Path, default=Path("/"), help="filesystem root")
        parser.add_argument("--spool", type=Path, default=SPOOL_DIR, help="request spool")
        return parser

    verb("render", "render the settings in force (at boot: a trial left over is rolled back)")
    verb("handle", "carry out the panel's requests (apply, confirm)")
    verb("rollback-due", "roll back a trial whose confirmation time is over")
    apply = verb("apply", "put a network.toml on trial")
    apply.add_argument("file", type=Path)
    apply.add_argument("--seconds", type=int, default=DEFAULT_CONFIRM_SECONDS)
    confirm = verb("confirm", "confirm the trial (as if from the address --via)")
    confirm.add_argument("trial")
    confirm.add_argument("--via", required=True, help="the box's address it was confirmed at")
    verb("status", "print the last outcome and the trial, if any")
    check = verbs.add_parser("check", help="validate a network.toml")
    check.add_argument("file", type=Path)
    network.set_defaults(func=run)


def keeper_for(args: argparse.Namespace) -> NetworkKeeper:
    """The keeper on the real system under ``--root``."""
    root: Path = args.root
    return NetworkKeeper(
        root=root,
        runner=CommandRunner(),
        clock=SystemClock(),
        boot_id=functools.partial(read_boot_id, root),
        spool=args.spool,
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch one verb."""
    verb: str = args.network_verb
    if verb == "check":
        try:
            settings = load_network(args.file)
        except ConfigError as exc:
            print("\n".join(exc.problems), file=sys.stderr)
            return 1
        print(f"{args.file}: OK ({settings.interface.mode})")
        return 0
    if verb == "status":
        status = read_status(args.root / args.spool.relative_to("/"))
        if status is None:
            print("no network status: not an appliance, or not booted yet", file=sys.stderr)
            return 1
        return _report([status])
    keeper = keeper_for(args)
    if verb == "render":
        return _report([keeper.boot()])
    if verb == "handle":
        return _report(handle_requests(keeper))
    if verb == "rollback-due":
        due = keeper.rollback_due()
        if not keeper.on_trial():
            # Nothing left to watch: the timer stops itself (a conclusion stopped it already;
            # this covers a trial concluded by a step that could not reach systemd).
            keeper.runner.run(["systemctl", "stop", ROLLBACK_TIMER])
        return _report([due] if due is not None else [])
    if verb == "apply":
        text = Path(args.file).read_text()
        return _report([keeper.apply(text, cli_actor(), args.seconds)])
    return _report([keeper.confirm(args.trial, args.via)])


def _report(outcomes: list[NetworkStatus]) -> int:
    failed = False
    for status in outcomes:
        print(f"{status.state}: {status.message}")
        for problem in status.problems:
            print(f"  {problem}")
        if status.trial is not None and status.state == "pending":
            print(f"  trial {status.trial.trial_id}, {status.trial.seconds} s")
        failed = failed or status.state in ("refused", "failed")
    return 1 if failed else 0
