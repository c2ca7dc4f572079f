"""The `dicom-gateway` command: run the daemon, check a config, operate the queue, test a PACS."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from gateway import __version__
from gateway.clock import SystemClock
from gateway.config import ConfigError, GatewayConfig, load_config, summary
from gateway.logsetup import setup_logging
from gateway.paging import Page, add_page_arguments, print_cli_note

DEFAULT_CONFIG = Path("/etc/dicom-gateway/gateway.toml")

# The verbs that create files in the state folder (queue and its objects, quarantine, discarded
# objects, the audit logs, the worklist cache, the room's selection, update state, the panel's
# files): whatever started them (systemd's UMask=0027, a shell's 022, cron, a container), what
# they create is never readable by others; group read stays for the operators' group. `release`
# is left out: it makes bundles and metadata meant for a web server. The rest only read.
STATE_VERBS = frozenset(
    {"run", "demo", "queue", "held", "quarantine", "procedure", "worklist", "update"}
)
STATE_UMASK = 0o027


def _load(args: argparse.Namespace) -> GatewayConfig:
    return load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))


class StopRequests:
    """Why the run ends: a stop signal (SIGTERM/SIGINT) or the panel's restart in place.

    Rules: either sets ``stop``. A signal wins over a restart whenever it comes: a restart asked
    for after a signal is ignored, and one asked for before it no longer counts
    (``restart_wanted`` False), so the daemon tells systemd STOPPING=1, not RELOADING=1, and
    the process exits instead of exec'ing itself into systemd's stop state, where it would be
    killed at TimeoutStopSec half-started.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._restart = threading.Event()
        self._signalled = threading.Event()

    def signal(self) -> None:
        self._signalled.set()
        self.stop.set()

    def ask_restart(self) -> None:
        if self._signalled.is_set():
            return
        self._restart.set()
        self.stop.set()

    def restart_wanted(self) -> bool:
        return self._restart.is_set() and not self._signalled.is_set()


def _install_stop_signals(requests: StopRequests) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("gateway.cli").info("signal received", extra={"signal": signum})
        requests.signal()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway in the foreground until SIGTERM/SIGINT (or a restart it asked for)."""
    from gateway import configstore
    from gateway.daemon import Gateway
    from gateway.notify import SystemdNotifier

    path = Path(args.config)
    # A configuration applied from the panel is on trial until the gateway reports READY.
    configstore.on_start(path)
    try:
        config = _load(args)
    except ConfigError:
        if configstore.rollback(path, "the new configuration does not validate"):
            configstore.exec_same_command()
        raise
    setup_logging(config.gateway.log_level)
    requests = StopRequests()
    _install_stop_signals(requests)
    gateway = Gateway(
        config,
        SystemClock(),
        SystemdNotifier(),
        credentials_dir=os.environ.get("CREDENTIALS_DIRECTORY"),
        config_path=path,
        on_ready=lambda: configstore.confirm(path),
        request_restart=requests.ask_restart,
        restart_wanted=requests.restart_wanted,
    )
    code = gateway.run(requests.stop)
    failed_start = code != 0 and not gateway.reached_ready
    if failed_start and configstore.rollback(path, "a service did not start with it"):
        configstore.exec_same_command()
    if requests.restart_wanted() and code == 0:
        # Same PID, same NOTIFY_SOCKET: systemd sees the service come up again with READY=1.
        configstore.exec_same_command()
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file: problems and exit 1, or a summary and exit 0."""
    config = _load(args)
    print(f"{args.config}: OK")
    print(summary(config))
    return 0


def _open_spool(config: GatewayConfig):  # type: ignore[no-untyped-def]
    from gateway.spool.store import Spool

    spool = Spool(
        config.gateway.state_dir,
        [d.name for d in config.destination],
        config.gateway.max_queue_bytes or 1,
        SystemClock(),
    )
    if not (config.gateway.state_dir / "spool").exists():
        raise ConfigError([f"no queue in {config.gateway.state_dir} (has the gateway run yet?)"])
    spool.open(recover=False)
    return spool


def cmd_queue(args: argparse.Namespace) -> int:
    """Operator access to the queue; safe while the daemon runs."""
    from gateway.spool.entries import DeliveryState

    config = _load(args)
    spool = _open_spool(config)
    try:
        if args.queue_cmd == "list":
            state = DeliveryState(args.state) if args.state else None
            rows = spool.list_deliveries(state, args.destination, args.limit, args.offset)
            page = Page(
                args.offset, args.limit, len(rows), spool.count_deliveries(state, args.destination)
            )
            if args.json:
                print(json.dumps([_jsonable(r) for r in rows], indent=2))
            else:
                print(
                    f"{'object':>7}  {'destination':<12} {'state':<8} {'tries':>5}  "
                    f"{'size':>10}  reason"
                )
                for r in rows:
                    print(
                        f"{r.object_id:>7}  {r.destination:<12} {r.state:<8} {r.attempts:>5}  "
                        f"{r.size:>10}  {r.last_error or ''}"
                    )
            print_cli_note(page, args.json)
            return 0
        if args.queue_cmd == "show":
            info = spool.show(args.object_id)
            if info is None:
                print(f"no object {args.object_id}", file=sys.stderr)
                return 1
            print(json.dumps(_jsonable(info), indent=2))
            return 0
        if args.queue_cmd == "retry":
            ids = args.object_id or None
            if ids is None and not args.all_failed:
                print("name object ids or --all-failed", file=sys.stderr)
                return 2
            count = spool.retry(ids, args.destination)
            print(f"{count} deliveries set to retry now")
            return 0
        if args.queue_cmd == "purge":
            ids = args.object_id or None
            if ids is None and not args.all_failed:
                print("name object ids or --all-failed", file=sys.stderr)
                return 2
            count = spool.purge(ids, states=(DeliveryState.FAILED,))
            print(f"{count} failed deliveries purged")
            return 0
    finally:
        spool.close()
    return 2


def _jsonable(obj: object) -> object:
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def cmd_echo(args: argparse.Namespace) -> int:
    """C-ECHO a configured destination and report TLS and association details."""
    from gateway.forward.echo import echo
    from gateway.forward.tlsctx import client_context

    config = _load(args)
    matches = [d for d in config.destination if d.name == args.destination]
    if not matches:
        names = ", ".join(d.name for d in config.destination) or "none"
        print(f"no destination named {args.destination!r} (configured: {names})", file=sys.stderr)
        return 2
    dest = matches[0]
    ctx = client_context(dest.tls, os.environ.get("CREDENTIALS_DIRECTORY")) if dest.tls else None
    report = echo(dest, config.gateway.ae_title, ctx)
    fields = _jsonable(report)
    assert isinstance(fields, dict)
    for key, value in fields.items():
        if value is not None:
            print(f"{key}: {value}")
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the gateway on built-in defaults with a demo PACS and sample files."""
    from gateway.demo.runner import run_demo

    setup_logging("WARNING" if not args.verbose else "INFO")
    requests = StopRequests()
    _install_stop_signals(requests)
    return run_demo(requests.stop, duration=args.duration, workdir=args.dir)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so the docs and tests can inspect it)."""
    parser = argparse.ArgumentParser(prog="dicom-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dicom-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="TOML config file")
        return p

    with_config(sub.add_parser("run", help="run the gateway in the foreground")).set_defaults(
        func=cmd_run
    )
    with_config(sub.add_parser("check-config", help="validate a config file")).set_defaults(
        func=cmd_check_config
    )

    queue = with_config(sub.add_parser("queue", help="inspect and operate the queue"))
    queue.set_defaults(func=cmd_queue)
    qsub = queue.add_subparsers(dest="queue_cmd", required=True)
    # --config is accepted before or after the queue action ("queue list --config F").
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", "-c", default=argparse.SUPPRESS, help="TOML config file")
    q_list = qsub.add_parser("list", help="list deliveries", parents=[after])
    q_list.add_argument("--state", choices=["held", "pending", "sending", "sent", "failed"])
    q_list.add_argument("--destination")
    add_page_arguments(q_list, 100)
    q_list.add_argument("--json", action="store_true")
    q_show = qsub.add_parser("show", help="show one object and its deliveries", parents=[after])
    q_show.add_argument("object_id", type=int)
    for name, text in (("retry", "retry failed deliveries now"), ("purge", "delete failed ones")):
        q = qsub.add_parser(name, help=text, parents=[after])
        q.add_argument("object_id", type=int, nargs="*")
        q.add_argument("--all-failed", action="store_true")
        if name == "retry":
            q.add_argument("--destination")

    echo = with_config(sub.add_parser("echo", help="C-ECHO a destination, with TLS details"))
    echo.add_argument("destination", help="destination name from the config")
    echo.set_defaults(func=cmd_echo)

    from gateway.cli_appliance import register as register_appliance
    from gateway.cli_held import register as register_held
    from gateway.cli_procedure import register as register_procedure
    from gateway.cli_profile import register as register_profile
    from gateway.cli_quarantine import register as register_quarantine
    from gateway.cli_release import register as register_release
    from gateway.cli_share import register as register_share
    from gateway.cli_simulate import register as register_simulate
    from gateway.cli_update import register as register_update
    from gateway.cli_web import register as register_web
    from gateway.cli_worklist import register as register_worklist

    register_worklist(sub)
    register_procedure(sub, default_config=str(DEFAULT_CONFIG))
    register_held(sub)
    register_quarantine(sub)
    register_profile(sub)
    register_release(sub)
    register_share(sub, default_config=str(DEFAULT_CONFIG))
    register_simulate(sub)
    register_update(sub)
    register_web(sub, default_config=str(DEFAULT_CONFIG))
    register_appliance(sub)

    demo = sub.add_parser("demo", help="run on built-in defaults with a demo PACS")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--dir", type=Path, default=None, help="keep demo files here")
    demo.add_argument("--verbose", action="store_true", help="show the gateway's log")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.command in STATE_VERBS:
        # Before anything is opened or made: the queue database, the state folder itself.
        os.umask(STATE_UMASK)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
