"""Sidecar files: patient and order identifiers a device writes next to a dropped file.

For a dropped file ``NAME`` (its whole name, extension included) the sidecar is ``NAME.json``
or ``NAME.meta`` in the same folder, e.g. ``IMG_0001.jpg.json`` beside ``IMG_0001.jpg``.

* ``.json``: one JSON object whose values are strings (or null): ``{"patient_id": "12345",
  "accession_number": "A778"}``.
* ``.meta``: UTF-8 text, one ``key = value`` a line; blank lines and lines starting with ``#``
  are ignored; the value is everything after the first ``=``, spaces around it trimmed, no
  quoting.

Keys: ``patient_id``, ``patient_name`` (DICOM form ``Family^Given``), ``accession_number``,
``birth_date`` (YYYYMMDD), ``sex`` (``M``, ``F`` or ``O``); all optional, an empty value is
unknown. Values are taken as they stand, like file-name values (:mod:`gateway.ingest.identity`):
too long, a control character or a backslash is not repaired. Anything wrong (an unknown or
repeated key, a bad value, not UTF-8, over 64 KiB, both a ``.json`` and a ``.meta``) makes the
whole sidecar malformed: :attr:`Sidecar.problem` says why, without repeating any value.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.identity import PatientIdentity
from gateway.ingest.identity import (
    LO_MAX,
    SH_MAX,
    clean_value,
    valid_person_name,
    valid_text,
)

SIDECAR_SUFFIXES = (".json", ".meta")
MAX_SIDECAR_BYTES = 64 * 1024
KEYS = ("patient_id", "patient_name", "accession_number", "birth_date", "sex")
SEXES = frozenset({"M", "F", "O"})


class SidecarError(ValueError):
    """A sidecar that cannot be used; the message never holds a value from it."""


@dataclass(frozen=True)
class Sidecar:
    """A sidecar as read: its identity, or the problem that made it unusable."""

    path: Path
    identity: PatientIdentity
    problem: str | None = None  # set: malformed, identity is empty


def is_sidecar_name(name: str) -> bool:
    """True for names that may be a sidecar (``*.json``, ``*.meta``, any case)."""
    return name.lower().endswith(SIDECAR_SUFFIXES)


def sidecar_candidates(path: Path) -> list[Path]:
    """The names a sidecar of ``path`` may have."""
    return [path.with_name(path.name + suffix) for suffix in SIDECAR_SUFFIXES]


def main_file_of(sidecar: Path) -> Path:
    """The dropped file a sidecar belongs to."""
    return sidecar.with_name(sidecar.name[: -len(sidecar.suffix)])


def read_sidecar(paths: list[Path]) -> Sidecar:
    """The sidecar at ``paths`` (the existing ones); bad content sets ``problem``, never raises.

    OSError when a file cannot be read at all (the caller keeps the file for a retry).
    """
    if len(paths) > 1:
        return Sidecar(paths[0], PatientIdentity(), "both a .json and a .meta sidecar")
    path = paths[0]
    with path.open("rb") as fh:
        raw = fh.read(MAX_SIDECAR_BYTES + 1)
    try:
        return Sidecar(path, parse_sidecar(path.suffix.lower(), raw))
    except SidecarError as exc:
        return Sidecar(path, PatientIdentity(), str(exc))


def parse_sidecar(suffix: str, raw: bytes) -> PatientIdentity:
    """The identity in a sidecar's bytes; SidecarError when it is malformed."""
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"sidecar larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")  # a BOM from Windows tools is harmless
    except UnicodeDecodeError as exc:
        raise SidecarError("sidecar is not UTF-8") from exc
    values = _parse_json(text) if suffix == ".json" else _parse_meta(text)
    return _identity(values)


def _parse_json(text: str) -> dict[str, str | None]:
    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise SidecarError(f"sidecar key {key!r} repeated")
            out[key] = value
        return out

    try:
        record = json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as exc:
        raise SidecarError(f"sidecar is not valid JSON (line {exc.lineno})") from exc
    if not isinstance(record, dict):
        raise SidecarError("sidecar JSON is not an object")
    values: dict[str, str | None] = {}
    for key, value in record.items():
        _check_key(key)
        if value is not None and not isinstance(value, str):
            raise SidecarError(f"sidecar value of {key!r} is not a string")
        values[key] = value
    return values


def _parse_meta(text: str) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip()
        if not sep:
            raise SidecarError(f"sidecar line {number} is not key = value")
        _check_key(key)
        if key in values:
            raise SidecarError(f"sidecar key {key!r} repeated")
        values[key] = value
    return values


def _check_key(key: str) -> None:
    if key not in KEYS:
        # A misspelt key silently ignored could bind the file without the value it meant.
        shown = key if key.isascii() and key.isprintable() and len(key) <= 32 else "?"
        raise SidecarError(f"unknown sidecar key {shown!r}")


def _identity(values: dict[str, str | None]) -> PatientIdentity:
    patient_id = clean_value(values.get("patient_id"))
    name = clean_value(values.get("patient_name"))
    accession = clean_value(values.get("accession_number"))
    birth_date = clean_value(values.get("birth_date"))
    sex = clean_value(values.get("sex"))
    if patient_id is not None and not valid_text(patient_id, LO_MAX):
        raise SidecarError("sidecar patient_id is not a valid DICOM LO value")
    if name is not None and not valid_person_name(name):
        raise SidecarError("sidecar patient_name is not a valid DICOM PN value")
    if accession is not None and not valid_text(accession, SH_MAX):
        raise SidecarError("sidecar accession_number is not a valid DICOM SH value")
    if birth_date is not None and not _valid_date(birth_date):
        raise SidecarError("sidecar birth_date is not a date YYYYMMDD")
    if sex is not None and sex not in SEXES:
        raise SidecarError("sidecar sex is not M, F or O")
    return PatientIdentity(
        patient_id=patient_id,
        patient_name=name,
        accession_number=accession,
        birth_date=birth_date,
        sex=sex,
    )


def _valid_date(value: str) -> bool:
    if len(value) != 8 or not value.isascii() or not value.isdigit():
        return False
    try:
        datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True
