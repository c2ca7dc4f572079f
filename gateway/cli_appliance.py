"""``dicom-gateway appliance ...``: the flashed box's own verbs (first boot, network).

Each module in :data:`VERBS` has ``register_cli(subparsers)`` adding its verbs under
``appliance``; every verb takes ``--root`` so tests run it against a fake root.
"""

from __future__ import annotations

import argparse
import importlib

VERBS: tuple[str, ...] = ("gateway.appliance.network",)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``appliance`` to the ``dicom-gateway`` parser."""
    appliance = subparsers.add_parser("appliance", help="the appliance: first boot, network")
    verbs = appliance.add_subparsers(dest="appliance_verb", required=True)
    for name in VERBS:
        importlib.import_module(name).register_cli(verbs)
