"""`dicom-gateway procedure select|clear|show`: the procedure selected for the room.

Files dropped while a procedure is selected are bound to it first (docs/binding.md). The
selection lives in ``<state_dir>/room-selection.json``; the daemon reads it for every file, so a
change here takes effect with the next file, without a restart. The operator sees the patient on
stdout to check the choice; nothing with patient data goes to the log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from gateway.audit import AUDIT_FILE, AuditLog, cli_actor
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig, load_config
from gateway.worklist.item import WorklistItem
from gateway.worklist.lookup import SeveralStepsError, WorklistLookup, one_step
from gateway.worklist.selection import RoomSelection, Selection, selection_path

CACHE_FILE = "worklist.sqlite"

LookupFactory = Callable[[GatewayConfig], AbstractContextManager[WorklistLookup]]


class ProcedureCommandError(Exception):
    """The command cannot do what was asked; the message is for the operator."""


@contextmanager
def open_worklist_cache(config: GatewayConfig) -> Iterator[WorklistLookup]:
    """The daemon's worklist cache at ``<state_dir>/worklist.sqlite``, opened for this command."""
    from gateway.worklist.cache import WorklistCache

    if config.worklist is None:
        raise ProcedureCommandError("no [worklist] in the configuration: nothing to select from")
    path = config.gateway.state_dir / CACHE_FILE
    if not path.exists():
        raise ProcedureCommandError(
            f"no worklist cache at {path} (has the gateway fetched a worklist yet?)"
        )
    cache = WorklistCache(path, SystemClock(), config.worklist.expire_grace_hours)
    cache.open()
    try:
        yield cache
    finally:
        cache.close()


operator_name = cli_actor  # who runs the command, as recorded with the selection


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    open_lookup: LookupFactory = open_worklist_cache,
    clock: Clock | None = None,
    default_config: str = "/etc/dicom-gateway/gateway.toml",
) -> None:
    """Add ``procedure select|clear|show`` to the ``dicom-gateway`` parser."""
    commands = _Commands(open_lookup, clock or SystemClock())
    procedure = subparsers.add_parser("procedure", help="the procedure selected for the room")
    procedure.add_argument("--config", "-c", default=default_config, help="TOML config file")
    actions = procedure.add_subparsers(dest="procedure_cmd", required=True)
    # --config is accepted before or after the action, as for "queue".
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", "-c", default=argparse.SUPPRESS, help="TOML config file")
    select = actions.add_parser(
        "select", help="bind files dropped from now on to this order", parents=[after]
    )
    select.add_argument("accession", help="Accession Number of the scheduled procedure")
    select.add_argument(
        "--step", help="Scheduled Procedure Step ID, when the order has several steps"
    )
    select.set_defaults(func=commands.select)
    actions.add_parser("clear", help="select nothing", parents=[after]).set_defaults(
        func=commands.clear
    )
    actions.add_parser("show", help="what is selected", parents=[after]).set_defaults(
        func=commands.show
    )


class _Commands:
    def __init__(self, open_lookup: LookupFactory, clock: Clock) -> None:
        self.open_lookup = open_lookup
        self.clock = clock

    def _selection(self, config: GatewayConfig) -> RoomSelection:
        minutes = config.worklist.selection_expires_minutes if config.worklist else 240.0
        return RoomSelection(selection_path(config.gateway.state_dir), self.clock, minutes)

    def _audit(self, config: GatewayConfig) -> AuditLog:
        return AuditLog(config.gateway.state_dir / AUDIT_FILE, self.clock)

    def select(self, args: argparse.Namespace) -> int:
        config = _load(args)
        try:
            with self.open_lookup(config) as lookup:
                item = _one_step(lookup, args.accession, args.step)
        except ProcedureCommandError as exc:
            print(f"procedure select: {exc}", file=sys.stderr)
            return 1
        chosen = self._selection(config).select(item, operator_name())
        self._audit(config).append(
            chosen.by,
            "procedure select",
            f"accession {item.accession_number}",
            {"item_key": item.key, "step": item.scheduled_procedure_step_id},
        )
        print("selected:")
        _print_item(item)
        print(f"  by:          {chosen.by}")
        print(f"  until:       {_local(chosen.selected_at + _lifetime(config))} (unless cleared)")
        return 0

    def clear(self, args: argparse.Namespace) -> int:
        config = _load(args)
        by = operator_name()
        self._selection(config).clear(by)
        self._audit(config).append(by, "procedure clear", "room selection", {})
        print("selection cleared: files are bound by file name or sidecar")
        return 0

    def show(self, args: argparse.Namespace) -> int:
        config = _load(args)
        selection = self._selection(config)
        current = selection.current()
        if current is None:
            last = selection.recorded()
            if last is None:
                print("no procedure selected")
            else:
                print(
                    f"no procedure selected (the selection of accession {last.accession_number}"
                    f" by {last.by} at {_local(last.selected_at)} has expired)"
                )
            return 0
        item = self._still_scheduled(config, current)
        if item is None:
            print(
                f"selected: accession {current.accession_number}, but its step is no longer in"
                " the worklist cache: files are not bound to it"
            )
        else:
            print("selected:")
            _print_item(item)
        print(f"  by:          {current.by} at {_local(current.selected_at)}")
        print(f"  until:       {_local(current.selected_at + _lifetime(config))}")
        return 0

    def _still_scheduled(self, config: GatewayConfig, current: Selection) -> WorklistItem | None:
        try:
            with self.open_lookup(config) as lookup:
                return lookup.get(current.item_key)
        except ProcedureCommandError:
            return None


def _load(args: argparse.Namespace) -> GatewayConfig:
    return load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))


def _one_step(lookup: WorklistLookup, accession: str, step: str | None) -> WorklistItem:
    try:
        return one_step(lookup, accession, step)
    except LookupError as exc:
        raise ProcedureCommandError(
            f"{exc}{' (--step)' if isinstance(exc, SeveralStepsError) else ''}"
        ) from None


def _print_item(item: WorklistItem) -> None:
    print(f"  patient:     {item.patient_name} (ID {item.patient_id})")
    print(f"  accession:   {item.accession_number}")
    print(f"  procedure:   {item.requested_procedure_description or item.requested_procedure_id}")
    print(f"  step:        {item.scheduled_procedure_step_id}")
    print(f"  scheduled:   {item.scheduled_start_date} {item.scheduled_start_time}".rstrip())
    print(f"  key:         {item.key}")


def _lifetime(config: GatewayConfig) -> float:
    minutes = config.worklist.selection_expires_minutes if config.worklist else 240.0
    return minutes * 60.0


def _local(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
