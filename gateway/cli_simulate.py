"""`dicom-gateway simulate-device`: play a device profile's messages onto a serial line.

For commissioning and tests: point it at the other end of a null-modem cable (or of a socat
pty pair) and the gateway should queue what it plays. ``--inject`` adds faults; see
:mod:`gateway.simulate.faults` and docs/serial.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from gateway.config import ConfigError
from gateway.simulate.faults import KINDS, parse_injections


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate-device`` to the ``dicom-gateway`` parser."""
    faults = "; ".join(f"{kind}: {meaning}" for kind, (_, meaning) in KINDS.items())
    sim = subparsers.add_parser(
        "simulate-device",
        help="play a device profile's messages onto a serial port (commissioning, tests)",
        description="Play a profile's simulator messages onto a serial line as the device would.",
        epilog=f"Faults (--inject kind[:amount][@message],...): {faults}.",
    )
    add_arguments(sim)
    sim.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options (shared with hardware/simulate.py)."""
    parser.add_argument("--profile", required=True, help="built-in profile name or TOML path")
    parser.add_argument("--port", required=True, help="device path, pty or pyserial URL")
    parser.add_argument("--baudrate", type=int, default=9600, help="bits per second")
    parser.add_argument("--count", type=int, default=None, help="messages to play (cycling)")
    parser.add_argument(
        "--inject", default="", help="faults, e.g. bad-checksum:2,noise@2,silence:8@3"
    )
    parser.add_argument(
        "--retry-wait", type=float, default=10.0, help="astm-e1394: wait before a repeat (s)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def run(args: argparse.Namespace) -> int:
    """Run the simulator from parsed arguments; 0 when every message was played (and ACKed)."""
    from gateway.ingest.serial.profiles import load_profile
    from gateway.simulate.player import DeviceSimulator, emulates_rate, open_line

    try:
        injections = parse_injections(args.inject)
    except ValueError as exc:
        print(f"simulate-device: {exc}", file=sys.stderr)
        return 2
    try:
        profile = load_profile(args.profile)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"profile error: {problem}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with open_line(args.port, args.baudrate) as line:
        simulator = DeviceSimulator(
            profile,
            line,
            injections=injections,
            count=args.count,
            emulate_rate=emulates_rate(args.port),
            retry_wait=args.retry_wait,
            log=(lambda _t: None) if args.quiet else (lambda t: print(f"simulate-device: {t}")),
        )
        report = simulator.run(stop)
    print(
        f"simulate-device: {report.played} played, {report.delivered} delivered, "
        f"{report.abandoned} abandoned",
        flush=True,
    )
    return 0 if report.abandoned == 0 and report.played == simulator.count else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (hardware/simulate.py)."""
    parser = argparse.ArgumentParser(prog="simulate-device", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
