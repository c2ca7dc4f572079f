"""`dicom-gateway worklist list|refresh`: the cached Modality Worklist, for the operator.

``refresh`` asks the RIS now, from this process, and writes the shared cache (SQLite WAL is
safe beside the daemon, which picks the new set up on its next read). The list goes to stdout
for the operator who asked; nothing with patient data goes to the log.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from gateway.clock import SystemClock
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.forward.tlsctx import client_context
from gateway.paging import Page, add_page_arguments, print_cli_note
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import WorklistClient, WorklistUnavailable

CACHE_FILE = "worklist.sqlite"


def _load(args: argparse.Namespace) -> GatewayConfig:
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    if config.worklist is None:
        raise ConfigError([f"{args.config}: no [worklist] section: there is no worklist"])
    return config


def _cache(config: GatewayConfig) -> WorklistCache:
    assert config.worklist is not None
    path = config.gateway.state_dir / CACHE_FILE
    return WorklistCache(path, SystemClock(), config.worklist.expire_grace_hours)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the cached steps (not expired) and when the cache was last refreshed."""
    config = _load(args)
    if not (config.gateway.state_dir / CACHE_FILE).exists():
        print("no worklist cache yet (the gateway has not fetched one)")
        return 0
    cache = _cache(config)
    cache.open()
    try:
        every, fetched = cache.items(), cache.fetched_at
    finally:
        cache.close()
    end = None if args.limit is None else args.offset + args.limit
    items = every[args.offset : end]
    page = Page(
        args.offset, len(every) if args.limit is None else args.limit, len(items), len(every)
    )
    if args.json:
        rows = [
            {
                "key": i.key,
                "accession_number": i.accession_number,
                "patient_id": i.patient_id,
                "patient_name": i.patient_name,
                "scheduled": f"{i.scheduled_start_date} {i.scheduled_start_time}".strip(),
                "modality": i.modality,
                "step_id": i.scheduled_procedure_step_id,
                "procedure": i.requested_procedure_description,
            }
            for i in items
        ]
        out = {"fetched_at": fetched, "items": rows, "total": len(every)}
        print(json.dumps(out, ensure_ascii=False, indent=1))
        print_cli_note(page, as_json=True)
        return 0
    age = f"{(time.time() - fetched) / 60:.0f} min ago" if fetched else "never"
    print(f"{len(every)} scheduled step(s); last refreshed {age}")
    for i in items:
        when = f"{i.scheduled_start_date} {i.scheduled_start_time[:4]}".strip()
        print(
            f"{i.accession_number:<16} {when:<13} {i.modality:<4} {i.patient_id:<16} "
            f"{i.patient_name:<30} {i.scheduled_procedure_step_id}"
        )
    print_cli_note(page, as_json=False)
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    """Fetch the worklist from the RIS now; the cache is replaced only on success."""
    config = _load(args)
    wl = config.worklist
    assert wl is not None
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    ctx = client_context(wl.tls, creds) if wl.tls else None
    client = WorklistClient(wl, config.gateway.ae_title, ctx)
    started = time.time()
    try:
        items = client.fetch_scheduled(datetime.date.today())
    except WorklistUnavailable as exc:
        print(f"worklist refresh failed, cache kept: {exc.reason}", file=sys.stderr)
        return 1
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    cache = _cache(config)
    cache.open()
    try:
        cache.replace(items, started)
    finally:
        cache.close()
    print(f"worklist refreshed: {len(items)} scheduled step(s)")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worklist list|refresh`` to the ``dicom-gateway`` parser."""
    from gateway.cli import DEFAULT_CONFIG

    worklist = subparsers.add_parser("worklist", help="the cached Modality Worklist")
    worklist.add_argument("--config", "-c", default=str(DEFAULT_CONFIG), help="TOML config file")
    actions = worklist.add_subparsers(dest="worklist_cmd", required=True)
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", "-c", default=argparse.SUPPRESS, help="TOML config file")
    listing = actions.add_parser("list", help="cached scheduled steps", parents=[after])
    listing.add_argument("--json", action="store_true")
    add_page_arguments(listing, None)  # the whole cached worklist unless told
    listing.set_defaults(func=cmd_list)
    actions.add_parser("refresh", help="ask the RIS now", parents=[after]).set_defaults(
        func=cmd_refresh
    )
