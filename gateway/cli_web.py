"""``dicom-gateway setup-token``: print the web panel's one-time setup token.

The daemon makes the token while no panel account exists; this command only reads it from
``<state_dir>/web/setup-token`` (0600), so it runs as root or as the daemon's user.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.web.auth.db import DB_FILE, web_dir
from gateway.web.auth.setup import read_token, token_path


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    default_config: str = "/etc/dicom-gateway/gateway.toml",
) -> None:
    """Add ``setup-token`` to the ``dicom-gateway`` parser."""
    cmd = subparsers.add_parser(
        "setup-token", help="print the web panel's one-time setup token (first start only)"
    )
    cmd.add_argument("--config", "-c", default=default_config, help="TOML config file")
    cmd.set_defaults(func=setup_token)


def setup_token(args: argparse.Namespace) -> int:
    """Print the token; exit 1 with the reason when there is none to print."""
    config = load_config(Path(args.config), os.environ.get("CREDENTIALS_DIRECTORY"))
    state = config.gateway.state_dir
    try:
        token = read_token(state)
    except PermissionError:
        print(
            f"cannot read {token_path(state)}: run as root or as the gateway's user",
            file=sys.stderr,
        )
        return 1
    if token is not None:
        print(token)
        return 0
    if (web_dir(state) / DB_FILE).exists():
        print(
            "the web panel is set up already: log in, or ask an engineer for an account",
            file=sys.stderr,
        )
    else:
        print(
            "no setup token yet: start the gateway (with [web] enabled) and ask again",
            file=sys.stderr,
        )
    return 1
