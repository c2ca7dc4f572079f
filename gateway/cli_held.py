"""`dicom-gateway held ...`: list, show, bind or discard held objects from a shell.

Safe while the daemon runs: the queue is opened without recovery (as ``queue`` does), the daemon's
lanes see a released object within their wait cap (0.5 s). Run it as the daemon's user, so the
files it writes (new payloads, the audit log) stay readable and writable by the daemon. Every
action is audited as ``cli:<user>`` (the user behind sudo when run through sudo).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from gateway.audit import AUDIT_FILE, AuditLog, cli_actor
from gateway.clock import SystemClock
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.identity import PatientIdentity
from gateway.paging import Page, add_page_arguments, print_cli_note
from gateway.spool.entries import ObjectSource
from gateway.spool.store import Spool
from gateway.worklist.beside import open_worklist_cache
from gateway.worklist.item import WorklistItem
from gateway.worklist.lookup import WorklistLookup
from gateway.worklist.reconcile import ReconcileError, Reconciler

CacheFactory = Callable[[GatewayConfig], AbstractContextManager[WorklistLookup]]


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    open_cache: CacheFactory = open_worklist_cache,
) -> None:
    """Add the ``held`` command and its actions to the ``dicom-gateway`` parser."""
    from gateway.cli import DEFAULT_CONFIG

    config_arg = argparse.ArgumentParser(add_help=False)
    config_arg.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="TOML config file")
    held = subparsers.add_parser(
        "held", help="reconcile held objects (bind to a patient, or discard)", parents=[config_arg]
    )
    held.set_defaults(func=lambda args: run(args, open_cache))
    sub = held.add_subparsers(dest="held_cmd", required=True)
    # --config is accepted before or after the action, as for "queue".
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", "-c", default=argparse.SUPPRESS, help="TOML config file")

    listing = sub.add_parser("list", help="list held objects and why", parents=[after])
    add_page_arguments(listing, 100)
    listing.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="one held object and candidate items", parents=[after])
    show.add_argument("object_id", type=int)

    bind = sub.add_parser(
        "bind",
        help="bind to a worklist item (--item, --accession) or to typed demographics",
        parents=[after],
    )
    bind.add_argument("object_id", type=int)
    bind.add_argument("--item", metavar="KEY", help="worklist item key (see 'held show')")
    bind.add_argument(
        "--accession",
        metavar="ACC",
        help="alone: the worklist item with this accession number; with --patient-id: typed",
    )
    bind.add_argument("--patient-id", help="typed demographics: patient ID (required)")
    bind.add_argument("--patient-name", help="typed demographics: name as Family^Given")
    bind.add_argument("--birth-date", metavar="YYYYMMDD")
    bind.add_argument("--sex", choices=["M", "F", "O"])

    discard = sub.add_parser("discard", help="take a held object out of the queue", parents=[after])
    discard.add_argument("object_id", type=int)
    discard.add_argument("--reason", required=True, help="why (no patient names, please)")


def run(args: argparse.Namespace, open_cache: CacheFactory) -> int:
    """Execute one ``held`` action; 0 done, 1 refused, 2 usage error."""
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    usage = _usage_problem(args)
    if usage:
        print(usage, file=sys.stderr)
        return 2
    spool = _open_spool(config)
    state_dir = config.gateway.state_dir
    clock = SystemClock()
    try:
        with open_cache(config) as cache:
            reconciler = Reconciler(
                spool, cache, AuditLog(state_dir / AUDIT_FILE, clock), spool.staging_dir, clock
            )
            return _dispatch(args, reconciler)
    except ReconcileError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    finally:
        spool.close()


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.held_cmd != "bind":
        return None
    typed = args.patient_id is not None or args.patient_name is not None
    if typed and args.item:
        return "give either --item or typed demographics, not both"
    if typed and not (args.patient_id and args.patient_name):
        return "typed demographics need --patient-id and --patient-name"
    if not typed and (args.birth_date or args.sex):
        return "--birth-date and --sex go with --patient-id and --patient-name"
    if not typed and bool(args.item) == bool(args.accession):
        return "name the worklist item: --item KEY or --accession ACC"
    return None


def _dispatch(args: argparse.Namespace, reconciler: Reconciler) -> int:
    by = cli_actor()
    if args.held_cmd == "list":
        rows = reconciler.list_held(args.limit, args.offset)
        page = Page(args.offset, args.limit, len(rows), reconciler.count_held())
        if args.json:
            print(json.dumps([_plain(r) for r in rows], indent=2, ensure_ascii=False))
        else:
            print(f"{'object':>7}  {'held since (UTC)':<20} {'kind':<6} {'source':<12} reason")
            for r in rows:
                print(
                    f"{r.object_id:>7}  {_utc(r.enqueued_at):<20} {r.kind:<6} {r.source:<12}"
                    f" {r.held_reason}"
                )
                for line in source_lines(r.sources):
                    print(f"{'':>9}{line}")
        print_cli_note(page, args.json)
        return 0
    if args.held_cmd == "show":
        view = reconciler.show(args.object_id)
        print(json.dumps(_plain(view), indent=2, ensure_ascii=False))
        return 0
    if args.held_cmd == "discard":
        kept = reconciler.discard(args.object_id, args.reason, by)
        print(f"object {args.object_id} discarded; its file is kept at {kept}")
        return 0
    if args.patient_id is not None:
        identity = PatientIdentity(
            patient_id=args.patient_id,
            patient_name=args.patient_name,
            accession_number=args.accession,
            birth_date=args.birth_date,
            sex=args.sex,
        )
        result = reconciler.bind_to_demographics(args.object_id, identity, by)
    elif args.item:
        result = reconciler.bind_to_item(args.object_id, args.item, by)
    else:
        result = reconciler.bind_to_accession(args.object_id, args.accession, by)
    print(
        f"object {result.object_id} bound and released to {result.deliveries} destination(s);"
        f" study {result.study_instance_uid}"
    )
    return 0


def source_lines(sources: Sequence[ObjectSource], *, detail: bool = False) -> list[str]:
    """Where an object came from, a line per source; ``detail`` adds size, hash and hints.

    Several sources mean one instance arrived from several places: each is named, so the
    operator sees every file the object stands for.
    """
    lines: list[str] = []
    for src in sources:
        line = f"from {src.label}, arrived {_utc(src.arrived_at)} UTC"
        if detail:
            size = f"{src.size} bytes, " if src.size is not None else ""
            line += f" ({size}sha256 {src.sha256})"
        lines.append(line)
        if src.identity_note:
            lines.append(f"  file name identity not used: {src.identity_note}")
        hints = [f"{label} {value!r}" for label, value in src.hints]
        if detail and hints:
            lines.append(f"  the file name also gave (a hint, not bound): {', '.join(hints)}")
    return lines


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _open_spool(config: GatewayConfig) -> Spool:
    state_dir = config.gateway.state_dir
    if not (state_dir / "spool").exists():
        raise ConfigError([f"no queue in {state_dir} (has the gateway run yet?)"])
    spool = Spool(
        state_dir,
        [d.name for d in config.destination],
        config.gateway.max_queue_bytes or 1,
        SystemClock(),
    )
    spool.open(recover=False)  # the daemon may be half-way through an enqueue or a send
    return spool


def _plain(obj: object) -> object:
    """Dataclasses, enums, paths and mappings as JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, WorklistItem):
            fields.pop("dataset_json", None)  # the RIS's whole response: too much for a terminal
            fields["key"] = obj.key
        return fields
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
