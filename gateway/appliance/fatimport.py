"""Files the field engineer put on the card's FAT partition: dicom-gateway.toml and network.toml.

``dicom-gateway.toml`` is checked exactly as ``dicom-gateway check-config --config <that file>``
checks it (the same :func:`gateway.config.load_config`, the same messages naming key and line),
then installed through the panel's own :class:`gateway.configstore.ConfigStore` apply, which
checks it once more as ``/etc/dicom-gateway/gateway.toml`` (relative paths resolve there, as
when the daemon starts), records the configuration as it was and the imported one as versions
(the panel's history can go back to the defaults), and replaces the file durably. Then the
card's copy is renamed ``dicom-gateway.toml.imported``, so it is not imported again over what
the panel changes later; a new ``dicom-gateway.toml`` dropped on the card is imported at the
next boot (a feature: a site can re-provision a box from the card). A refused file stays on the
card as it is, the box keeps the configuration it has (the defaults on a new box), and the
problems go to FIRSTBOOT-REPORT.txt, the console and the panel
(``<state_dir>/firstboot-report.json``, shown on the dashboard).

``network.toml`` is h-net's: validated by ``gateway.appliance.network.load_network`` and installed
as ``/data/system/network.toml``, renamed ``network.toml.imported`` the same way.

A power cut at any instant converges: nothing on the card changes before the new file is
durable in its place; a re-run finds the card's file still there, sees the installed file
already equal to it (or its version recorded but the file not yet replaced, and finishes that),
sets the owner again and renames the card's copy. No version is recorded twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.appliance.files import Owner, own_tree, remove_file, rename_file, write_file
from gateway.clock import Clock
from gateway.config import ConfigError, load_config
from gateway.configstore import ConfigStore
from gateway.textsafe import json_line

CONFIG_NAME = "dicom-gateway.toml"
NETWORK_NAME = "network.toml"
IMPORTED_SUFFIX = ".imported"
ACTOR = "firstboot"  # the configuration history's actor for an import from the card
CONFIG_MODE = 0o640  # root:dicom-gateway: the daemon reads it through its group
PANEL_REPORT = "firstboot-report.json"  # under state_dir, read by the dashboard


class ImportStatus(StrEnum):
    """What became of one file on the card."""

    ABSENT = "absent"
    IMPORTED = "imported"
    REFUSED = "refused"


@dataclass(frozen=True)
class ImportOutcome:
    """One card file's import."""

    name: str  # the file's name on the card
    status: ImportStatus
    detail: str  # one sentence
    problems: tuple[str, ...] = ()  # as check-config prints them, key and line


def _imported_name(path: Path) -> Path:
    return path.with_name(path.name + IMPORTED_SUFFIX)


def import_config(
    card_file: Path,
    config_path: Path,
    state_dir: Path,
    clock: Clock,
    config_owner: Owner | None,
    service_owner: Owner | None,
) -> ImportOutcome:
    """Import ``dicom-gateway.toml`` from the card (see the module docstring)."""
    if not card_file.is_file():
        return ImportOutcome(CONFIG_NAME, ImportStatus.ABSENT, "not on the card")
    try:
        load_config(card_file)  # what `dicom-gateway check-config --config <card file>` runs
    except ConfigError as exc:
        return _refused(exc.problems)
    data = card_file.read_bytes()
    text = data.decode("utf-8")  # load_config has checked it is UTF-8
    store = ConfigStore(config_path, state_dir, clock)
    version = "unchanged"
    if store.current_text() != text:
        latest = next(iter(store.versions()), None)
        digest = hashlib.sha256(data).hexdigest()
        if latest is not None and latest.actor == ACTOR and latest.sha256 == digest:
            # A cut fell between apply() recording this version and replacing the file.
            write_file(config_path, data, CONFIG_MODE, config_owner)
            version = latest.version_id
        else:
            result = store.apply(text, ACTOR, f"imported from the card's {CONFIG_NAME}")
            if not result.ok:
                return _refused(result.problems)
            assert result.version is not None
            version = result.version.version_id
    # Every time, not only after a write: a cut may have come between the write and these.
    write_file(config_path, data, CONFIG_MODE, config_owner)
    own_tree(store.history_dir, service_owner)
    rename_file(card_file, _imported_name(card_file))
    where = f"configuration version {version}" if version != "unchanged" else "it was already"
    return ImportOutcome(
        CONFIG_NAME,
        ImportStatus.IMPORTED,
        f"installed as {config_path.name} ({where}); the card's copy is now "
        f"{CONFIG_NAME}{IMPORTED_SUFFIX}",
    )


def _refused(problems: list[str] | tuple[str, ...]) -> ImportOutcome:
    return ImportOutcome(
        CONFIG_NAME,
        ImportStatus.REFUSED,
        "refused: the box keeps its configuration (the defaults on a new box)",
        tuple(problems),
    )


NetworkValidator = Callable[[Path], object]


def network_validator() -> NetworkValidator:
    """h-net's ``load_network`` when it is there, else the interim check below.

    INTERIM (until gateway.appliance.network is merged): the file is only checked to be TOML;
    its schema is h-net's and is validated by their ``load_network`` once it exists.
    """
    with contextlib.suppress(ImportError):
        module = importlib.import_module("gateway.appliance.network")
        loader = getattr(module, "load_network", None)
        if callable(loader):
            return loader  # type: ignore[no-any-return]
    return _toml_only


def _toml_only(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path.name}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path.name}: TOML syntax error: {exc}"]) from None


def import_network(card_file: Path, installed: Path, validate: NetworkValidator) -> ImportOutcome:
    """Import ``network.toml`` from the card to ``installed`` (/data/system/network.toml)."""
    if not card_file.is_file():
        return ImportOutcome(NETWORK_NAME, ImportStatus.ABSENT, "not on the card")
    try:
        validate(card_file)
    except ConfigError as exc:
        return ImportOutcome(
            NETWORK_NAME,
            ImportStatus.REFUSED,
            "refused: the box keeps its network settings (DHCP on a new box)",
            tuple(exc.problems),
        )
    write_file(installed, card_file.read_bytes(), 0o644)
    rename_file(card_file, _imported_name(card_file))
    return ImportOutcome(
        NETWORK_NAME,
        ImportStatus.IMPORTED,
        f"installed as {installed}; the card's copy is now {NETWORK_NAME}{IMPORTED_SUFFIX}",
    )


def report_lines(outcomes: list[ImportOutcome]) -> list[str]:
    """FIRSTBOOT-REPORT.txt's body: one paragraph per file that was on the card."""
    lines: list[str] = []
    for outcome in outcomes:
        if outcome.status is ImportStatus.ABSENT:
            continue
        lines.append(f"{outcome.name}: {outcome.detail}")
        lines += [f"  config error: {problem}" for problem in outcome.problems]
        if outcome.status is ImportStatus.REFUSED:
            lines.append(
                "  Fix the file on the card and restart the box, or set it up in the web panel."
            )
        elif outcome.name == CONFIG_NAME:
            lines.append(
                f"  A new {CONFIG_NAME} put on the card is imported at the next boot and "
                "replaces what the panel set (the panel's history keeps the old version)."
            )
        lines.append("")
    return lines


def panel_report(outcomes: list[ImportOutcome]) -> bytes:
    """``<state_dir>/firstboot-report.json``: the refused files, for the dashboard."""
    refused = [
        {"file": o.name, "detail": o.detail, "problems": list(o.problems)}
        for o in outcomes
        if o.status is ImportStatus.REFUSED
    ]
    return (json_line({"refused": refused}) + "\n").encode("utf-8")


def write_panel_report(state_dir: Path, outcomes: list[ImportOutcome], owner: Owner | None) -> None:
    """Write (or, with nothing refused, remove) the dashboard's report file."""
    path = state_dir / PANEL_REPORT
    if not any(o.status is ImportStatus.REFUSED for o in outcomes):
        remove_file(path)
        return
    write_file(path, panel_report(outcomes), 0o640, owner)


def read_panel_report(state_dir: Path) -> list[str]:
    """The dashboard's lines: each refused card file with its problems; [] when none."""
    try:
        data = json.loads((state_dir / PANEL_REPORT).read_text(encoding="utf-8"))
        refused = data["refused"]
        return [
            f"{r['file']} from the card was {r['detail']}: " + "; ".join(r["problems"])
            for r in refused
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return []
