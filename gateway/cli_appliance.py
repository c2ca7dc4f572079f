"""``dicom-gateway appliance ...``: the flashed box's own verbs (first boot, network).

Each module in ``VERBS`` adds its verbs to the ``appliance`` group with ``register_cli``.
"""

from __future__ import annotations

import argparse
import importlib

VERBS = ("gateway.appliance.cli_firstboot",)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance`` and every module's verbs under it."""
    group = subparsers.add_parser("appliance", help="the flashed box: first boot, network")
    verbs = group.add_subparsers(dest="appliance_cmd", required=True)
    for name in VERBS:
        importlib.import_module(name).register_cli(verbs)
