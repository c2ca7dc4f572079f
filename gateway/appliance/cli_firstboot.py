"""``dicom-gateway appliance firstboot [--root PATH] [--boot PATH] [--early]``: the boot steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.appliance.commands import SubprocessRunner
from gateway.appliance.firstboot import Firstboot, Host, NoHost, run, run_early
from gateway.appliance.steps import NEEDS_A_PERSON
from gateway.clock import SystemClock

# Not 1 (an uncaught exception) nor 2 (a ConfigError): the unit takes this one as success, since
# the console and the panel already say what needs a person and the boot must go on.
EXIT_ATTENTION = 3


def register_cli(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``firstboot`` to the ``appliance`` group."""
    cmd = verbs.add_parser("firstboot", help="first boot steps (every boot; idempotent)")
    cmd.add_argument("--root", type=Path, default=Path("/"), help="the box's root (tests: a fake)")
    cmd.add_argument(
        "--boot", type=Path, default=None, help="the FAT partition (<root>/boot/firmware)"
    )
    cmd.add_argument(
        "--early",
        action="store_true",
        help="only the steps the network render needs (serial, network.toml), no reports",
    )
    cmd.set_defaults(func=firstboot)


def firstboot(args: argparse.Namespace) -> int:
    """Run the steps; print one line per step; exit EXIT_ATTENTION when a person must act."""
    root: Path = args.root
    live = root.resolve() == Path("/")
    fb = Firstboot(
        root=root,
        boot=args.boot or root / "boot/firmware",
        runner=SubprocessRunner(),
        clock=SystemClock(),
        host=Host() if live else NoHost(),
    )
    records = run_early(fb) if args.early else run(fb)
    for record in records:
        print(f"{record.name:<18} {record.result.status:<9} {record.result.summary}")
        for detail in record.result.details:
            print(f"{'':<18} {'':<9} config error: {detail}")
    return EXIT_ATTENTION if any(r.result.status in NEEDS_A_PERSON for r in records) else 0
