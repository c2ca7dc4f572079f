"""`dicom-gateway quarantine ...`: list, show and requeue the files the gateway could not take.

Safe while the daemon runs, like ``held``: the queue is opened without recovery, and a requeue
runs under the spool's operator lock (gateway.ingest.requeue). Run it as the daemon's user, so
the files it writes (objects queued, files put back in a drop folder, the audit log) stay the
daemon's. Every requeue is audited as ``cli:<user>``.

What reaches the terminal is escaped (gateway.textsafe): a drop-folder file name, and so a
reason or source quoting one, may hold CR, LF or an ESC sequence; the table shows each value on
one line, the JSON (``show``, ``list --json``) has no raw control character.

Exit codes: 0 done; 1 refused or not done (the reason on stderr; a requeue that could not
queue the object leaves it in quarantine); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.audit import AUDIT_FILE, AuditLog, cli_actor
from gateway.clock import SystemClock
from gateway.config import ConfigError, GatewayConfig, load_config, queue_limit
from gateway.ingest.quarantine import Quarantine
from gateway.ingest.requeue import QuarantineDesk, QuarantineEntry, RequeueError
from gateway.paging import Page, add_page_arguments, print_cli_note
from gateway.spool.store import Spool
from gateway.storagefault import StorageNotReadyError
from gateway.textsafe import json_line, one_line
from gateway.worklist.beside import open_worklist_cache

QUARANTINE_DIR = "quarantine"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``quarantine`` command and its actions to the ``dicom-gateway`` parser."""
    from gateway.cli import DEFAULT_CONFIG

    config_arg = argparse.ArgumentParser(add_help=False)
    config_arg.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="TOML config file")
    quarantine = subparsers.add_parser(
        "quarantine",
        help="files the gateway could not take: list, show, put back through ingest",
        parents=[config_arg],
    )
    quarantine.set_defaults(func=run)
    sub = quarantine.add_subparsers(dest="quarantine_cmd", required=True)
    # --config is accepted before or after the action, as for "held".
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", "-c", default=argparse.SUPPRESS, help="TOML config file")

    listing = sub.add_parser(
        "list", help="quarantined files, oldest first, and why", parents=[after]
    )
    add_page_arguments(listing, 100)
    listing.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="one quarantined file, as JSON", parents=[after])
    show.add_argument("ident", metavar="ID", help="its id, as 'quarantine list' shows it")

    requeue = sub.add_parser(
        "requeue",
        help="put files back through ingest, as if they arrived again",
        parents=[after],
    )
    requeue.add_argument("ident", metavar="ID", nargs="+")


def run(args: argparse.Namespace) -> int:
    """Execute one ``quarantine`` action; 0 done, 1 refused or not done, 2 usage error."""
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    with open_desk(config) as desk:
        if args.quarantine_cmd == "list":
            return _list(desk, args)
        if args.quarantine_cmd == "show":
            try:
                entry = desk.find(args.ident)
            except RequeueError as exc:
                print(f"refused: {one_line(str(exc))}", file=sys.stderr)
                return 1
            print(json_line(entry_json(entry), indent=2))
            return 0
        return _requeue(desk, args.ident)


@contextmanager
def open_desk(config: GatewayConfig) -> Iterator[QuarantineDesk]:
    """The daemon's quarantine and queue, opened beside it (``held``'s way)."""
    from gateway.ingest.coercion import WorklistCoercion
    from gateway.ingest.receiver import StoreReceiver
    from gateway.worklist.binding import Binder

    state = config.gateway.state_dir
    clock = SystemClock()
    spool = _open_ingest_spool(config, clock)
    quarantine = Quarantine(state / QUARANTINE_DIR, clock)
    try:
        with open_worklist_cache(config) as cache:
            admit = None
            listener = config.dicom_listener
            if listener is not None and listener.storage:
                prepare = None
                if listener.coerce_from_worklist and config.worklist is not None:
                    prepare = WorklistCoercion(Binder(cache, None, require_match=False))
                # The receiver's log events are the daemon's; here the outcome line says it.
                quiet = logging.getLogger("gateway.cli.quarantine")
                quiet.addHandler(logging.NullHandler())
                receiver = StoreReceiver(spool, quarantine, prepare=prepare, logger=quiet)
                admit = receiver.admit
            audit = AuditLog(state / AUDIT_FILE, clock)
            yield QuarantineDesk.for_config(config, quarantine, spool, admit, audit, clock)
    finally:
        spool.close()


def _open_ingest_spool(config: GatewayConfig, clock: SystemClock) -> Spool:
    """The queue with the daemon's ingest limits (a requeued object meets the same room
    checks as an arrival), opened without recovery: the daemon may be half-way through an
    enqueue or a send."""
    g = config.gateway
    if not (g.state_dir / "spool").exists():
        raise ConfigError([f"no queue in {g.state_dir} (has the gateway run yet?)"])
    spool = Spool(
        g.state_dir,
        [d.name for d in config.destination],
        queue_limit(g),
        clock,
        min_free_bytes=g.min_free_bytes,
        reserve_bytes=g.reserve_bytes,
    )
    spool.open(recover=False)
    return spool


def entry_json(entry: QuarantineEntry) -> dict[str, object]:
    """One quarantined file as JSON: what ``show`` prints and ``list --json`` lists."""
    item = entry.file
    return {
        "id": entry.ident,
        "quarantined_at": _utc(item.time),
        "channel": str(entry.channel),
        "source": item.source,
        "reason": item.reason,
        "size": item.size,
        "sha256": item.sha256,
        "original_path": item.original,
        "path": str(item.path),
        "requeueable": entry.not_requeueable is None,
        "not_requeueable": entry.not_requeueable,
    }


def _list(desk: QuarantineDesk, args: argparse.Namespace) -> int:
    entries = desk.entries()
    rows = entries[args.offset : args.offset + args.limit]
    page = Page(args.offset, args.limit, len(rows), len(entries))
    if args.json:
        print(json_line([entry_json(e) for e in rows], indent=2))
    else:
        print(
            f"{'id':<22} {'quarantined (UTC)':<20} {'channel':<10} {'source':<14} {'size':>10}"
            "  reason"
        )
        for e in rows:
            f = e.file
            # Names from a drop folder (a stray file's id is its name) and reasons quoting
            # them reach the terminal: one line each, control characters escaped.
            print(
                f"{one_line(e.ident):<22} {_utc(f.time):<20} {e.channel!s:<10}"
                f" {one_line(f.source):<14} {f.size:>10}  {one_line(f.reason)}"
            )
            if e.not_requeueable is not None:
                print(f"{'':>23}not requeueable: {one_line(e.not_requeueable)}")
    print_cli_note(page, args.json)
    return 0


def _requeue(desk: QuarantineDesk, idents: list[str]) -> int:
    by = cli_actor()
    code = 0
    for ident in idents:
        try:
            result = desk.requeue(ident, by)
        except RequeueError as exc:
            print(f"refused: {one_line(str(exc))}", file=sys.stderr)
            code = 1
            continue
        except (StorageNotReadyError, OSError) as exc:
            print(
                f"{one_line(ident)}: not requeued, it stays in quarantine: {one_line(str(exc))}",
                file=sys.stderr,
            )
            code = 1
            continue
        print(f"{one_line(ident)}: {one_line(result.what)}")
        if not result.ok:
            code = 1
    return code


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
