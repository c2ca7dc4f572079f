"""Files the field engineer put on the card's FAT partition: dicom-gateway.toml and network.toml.

``dicom-gateway.toml`` is checked exactly as ``dicom-gateway check-config --config <that file>``
checks it (the same :func:`gateway.config.load_config`, the same messages naming key and line),
then installed through the panel's own :class:`gateway.configstore.ConfigStore` apply, which
checks it once more as ``/etc/dicom-gateway/gateway.toml`` (relative paths resolve there, as
when the daemon starts), records the configuration as it was and the imported one as versions
(the panel's history can go back to the defaults), and replaces the file durably. A refused
file stays on the card as it is, the box keeps the configuration it has (the defaults on a new
box), and the problems go to FIRSTBOOT-REPORT.txt, the console and the panel.

``network.toml`` is h-net's: validated by ``gateway.appliance.network.load_network`` and installed
as ``/data/system/network.toml``.

An imported file is renamed ``<name>.imported`` on the card (:func:`retire`), so it is not
imported again over what the panel changes later; a new file dropped on the card is imported at
the next boot (a site can re-provision a box from the card). The rename comes last, after
FIRSTBOOT-REPORT.txt is written (gateway.appliance.firstboot), so a cut before it means the
next boot imports the same file again and writes the report again.

A power cut at any instant converges: nothing on the card changes before the new file is
durable in its place; a re-run finds the card's file still there, sees the installed file
already equal to it (or its version recorded but the file not yet replaced, and finishes that),
sets the owner again and reports the same version. No version is recorded twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateway.appliance.files import (
    Owner,
    own_tree,
    remove_file,
    rename_file,
    sweep_temporaries,
    write_file,
)
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
    card_file: Path | None = None  # an imported file, renamed by retire() once reported


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
    digest = hashlib.sha256(data).hexdigest()
    store = ConfigStore(config_path, state_dir, clock)
    sweep_temporaries(store.history_dir)  # what a cut left of an earlier import's apply()
    latest = next(iter(store.versions()), None)
    if store.current_text() == text:
        # Installed at an earlier run that was cut before the card's copy was renamed.
        version = next((v.version_id for v in store.versions() if v.sha256 == digest), None)
    elif latest is not None and latest.actor == ACTOR and latest.sha256 == digest:
        # A cut fell between apply() recording this version and replacing the file.
        write_file(config_path, data, CONFIG_MODE, config_owner)
        version = latest.version_id
    else:
        result = store.apply(text, ACTOR, f"imported from the card's {CONFIG_NAME}")
        if not result.ok:
            return _refused(result.problems)
        assert result.version is not None
        version = result.version.version_id
    # Every time, not only after a write: apply() writes the file as root:root, and a cut may
    # have come between that write and these.
    write_file(config_path, data, CONFIG_MODE, config_owner)
    own_tree(store.history_dir, service_owner)
    where = f" (configuration version {version})" if version is not None else ""
    return ImportOutcome(
        CONFIG_NAME,
        ImportStatus.IMPORTED,
        f"installed as {config_path.name}{where}; the card's copy is renamed "
        f"{CONFIG_NAME}{IMPORTED_SUFFIX}",
        card_file=card_file,
    )


def _refused(problems: list[str] | tuple[str, ...]) -> ImportOutcome:
    return ImportOutcome(
        CONFIG_NAME,
        ImportStatus.REFUSED,
        "refused: the box keeps its configuration (the defaults on a new box)",
        tuple(problems),
    )


NetworkValidator = Callable[[Path], object]


def import_network(card_file: Path, installed: Path, validate: NetworkValidator) -> ImportOutcome:
    """Import ``network.toml`` from the card to ``installed`` (/data/system/network.toml);
    ``validate`` raises ConfigError naming key and line (``network.load_network``)."""
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
    return ImportOutcome(
        NETWORK_NAME,
        ImportStatus.IMPORTED,
        f"installed as {installed.name}; the card's copy is renamed "
        f"{NETWORK_NAME}{IMPORTED_SUFFIX}",
        card_file=card_file,
    )


def retire(outcome: ImportOutcome) -> None:
    """Rename an imported file on the card to ``<name>.imported`` (once it is reported)."""
    card = outcome.card_file
    if outcome.status is ImportStatus.IMPORTED and card is not None and card.is_file():
        rename_file(card, _imported_name(card))


def paragraph(outcome: ImportOutcome) -> list[str]:
    """FIRSTBOOT-REPORT.txt's paragraph for one file that was on the card ([] when absent)."""
    if outcome.status is ImportStatus.ABSENT:
        return []
    lines = [f"{outcome.name}: {outcome.detail}"]
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
    return [*lines, ""]


def last_import_path(markers: Path, name: str) -> Path:
    """Where the paragraph of a file's last import is kept (on /data, beside the markers)."""
    return markers / f"last-import-{name}.txt"


def report_lines(outcomes: list[ImportOutcome], markers: Path) -> list[str]:
    """FIRSTBOOT-REPORT.txt's body: one paragraph per card file, this boot's outcome or, for a
    file not on the card now, the paragraph of its last import.

    The kept paragraphs are what makes the report whole after a cut between the renames of
    two imported files: the next boot no longer sees the first one on the card, and without
    them would write a report that forgets it.
    """
    lines: list[str] = []
    for outcome in outcomes:
        if outcome.status is ImportStatus.IMPORTED:
            text = "\n".join(paragraph(outcome))
            write_file(last_import_path(markers, outcome.name), text.encode("utf-8"), 0o644)
            lines += paragraph(outcome)
        elif outcome.status is ImportStatus.REFUSED:
            lines += paragraph(outcome)
        else:
            try:
                kept = last_import_path(markers, outcome.name).read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            lines += kept.split("\n")
    return lines


def panel_report(problems: list[str]) -> bytes:
    """``<state_dir>/firstboot-report.json``: what first boot could not do, for the dashboard."""
    return (json_line({"problems": problems}) + "\n").encode("utf-8")


def write_panel_report(state_dir: Path, problems: list[str], owner: Owner | None) -> None:
    """Write (or, with no problem, remove) the dashboard's report file."""
    path = state_dir / PANEL_REPORT
    if not problems:
        remove_file(path)
        return
    write_file(path, panel_report(problems), 0o640, owner)


def read_panel_report(state_dir: Path) -> list[str]:
    """The dashboard's lines: what the last boot's first boot could not do; [] when nothing."""
    try:
        data = json.loads((state_dir / PANEL_REPORT).read_text(encoding="utf-8"))
        problems = data["problems"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(problems, list):
        return []
    return [str(p) for p in problems]
