"""Finding, loading and checking device profiles; building a profile's protocol engine.

A profile is a built-in name (``gateway/profiles/<name>.toml``, shipped as package data and read
through importlib.resources, so it works from a wheel) or the path of a TOML file. Loading is as
strict as the gateway's config: every problem is reported at once, naming key, file and line,
and the regular expressions and text encodings are compiled and checked here, so a bad profile
stops the gateway at start rather than at the device's first message.
"""

from __future__ import annotations

import codecs
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config import ConfigError, LineFinder, format_loc, is_profile_path
from gateway.identity import PatientIdentity
from gateway.ingest.serial.engine import Note, ProtocolEngine
from gateway.ingest.serial.profile import (
    AstmProtocol,
    DeviceProfile,
    LineKvProtocol,
    PrintCaptureProtocol,
)

_TAGS = ("astm-e1394", "line-kv", "print-capture")
# The bytes the line-kv and print-capture engines split on must mean the same in the encoding.
_CONTROL_PROBE = "\r\n\f\b\t\x1b"
_ASCII_PROBE = "AZaz09 .:=-+_^,/()"
# DICOM value lengths of the identity attributes (PN per component group, LO, SH).
_IDENTITY_LIMITS = {"patient_id": 64, "patient_name": 64, "accession_number": 16}


class ProfileError(ConfigError):
    """The profile cannot be used: fix the file; ``problems`` names key, file and line of each."""


def _builtin_dir() -> Traversable:
    return resources.files("gateway").joinpath("profiles")


def list_builtin() -> list[str]:
    """Names of the built-in profiles, sorted."""
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in _builtin_dir().iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    )


def load_profile(name_or_path: str | Path, base: Path | None = None) -> DeviceProfile:
    """A built-in profile by name, or a profile file by path (relative to ``base`` if given)."""
    if isinstance(name_or_path, Path) or is_profile_path(name_or_path):
        path = Path(name_or_path)
        if base is not None and not path.is_absolute():
            path = base / path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise ProfileError([f"{path}: profile file not found"]) from None
        except OSError as exc:
            raise ProfileError([f"{path}: cannot read profile: {exc.strerror}"]) from None
        return parse_profile(raw, label=path.name)
    entry = _builtin_dir().joinpath(f"{name_or_path}.toml")
    if not entry.is_file():
        known = ", ".join(list_builtin()) or "none"
        raise ProfileError(
            [f"{name_or_path!r}: no such built-in profile (built in: {known}; a file needs a path)"]
        )
    return parse_profile(entry.read_bytes(), label=f"{name_or_path}.toml (built in)")


def parse_profile(raw: bytes, *, label: str = "profile") -> DeviceProfile:
    """Validate a profile document; raise ProfileError naming every problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError([f"{label}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError([f"{label}: TOML syntax error: {exc}"]) from None
    finder = LineFinder(text)

    def problem(loc: tuple[Any, ...], msg: str) -> str:
        # A list entry such as simulator.messages[2] has no line of its own: point at its key.
        while loc and isinstance(loc[-1], int):
            loc = loc[:-1]
        line = finder.find(loc)
        where = f"{label} line {line}" if line else label
        return f"{format_loc(loc)} ({where}): {msg}"

    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            if len(loc) > 1 and loc[0] == "link" and loc[1] in _TAGS:
                loc = (loc[0], *loc[2:])  # pydantic adds the discriminator's value to the path
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append(problem(loc, msg.removeprefix("Value error, ")))
        raise ProfileError(problems) from None
    problems = [problem(loc, msg) for loc, msg in profile_problems(profile)]
    if problems:
        raise ProfileError(problems)
    return profile


def profile_problems(profile: DeviceProfile) -> list[tuple[tuple[Any, ...], str]]:
    """What the model alone cannot see: patterns, encodings, units, protocol-specific rules."""
    link = profile.link
    problems: list[tuple[tuple[Any, ...], str]] = []
    for i, m in enumerate(profile.measurement):
        if _bad_ucum(m.unit):
            problems.append((("measurement", i, "unit"), "not a UCUM code (no spaces)"))
        for text, ucum in m.device_units.items():
            if _bad_ucum(ucum):
                problems.append((("measurement", i, "device_units"), f"{text!r}: not a UCUM code"))
    if isinstance(link, AstmProtocol):
        return problems
    problems += _encoding_problem(link.encoding)
    if isinstance(link, LineKvProtocol):
        problems += _pattern_problems(
            "field_pattern",
            link.field_pattern,
            required={"name", "value"},
            allowed={"name", "value", "unit", "flag"},
        )
        if link.terminator_pattern is not None:
            problems += _pattern_problems("terminator_pattern", link.terminator_pattern)
    else:
        if profile.measurement:
            problems.append(
                (("measurement", 0, "match"), "print-capture keeps the printout as text only")
            )
        if not (profile.output.text_pdf or profile.output.text_sr):
            problems.append((("output", "text_pdf"), "a print job needs text_pdf or text_sr"))
    for key, groups in _IDENTITY_GROUPS.items():
        pattern = getattr(link, key)
        if pattern is not None:
            problems += _pattern_problems(key, pattern, required=groups, any_of=True)
    if not problems:
        for i, message in enumerate(profile.simulator.messages):
            try:
                message.encode(link.encoding)
            except UnicodeEncodeError as exc:
                problems.append(
                    (
                        ("simulator", "messages", i),
                        f"message {i + 1}: {exc.reason} in "
                        f"{link.encoding} at character {exc.start}",
                    )
                )
    return problems


# Each identity pattern names its value by one of these groups (family/given build a PN).
_IDENTITY_GROUPS = {
    "patient_id_pattern": {"patient_id"},
    "patient_name_pattern": {"patient_name", "family"},
    "accession_pattern": {"accession_number"},
}


def _bad_ucum(code: str) -> bool:
    return not code or any(c.isspace() for c in code)


def _encoding_problem(encoding: str) -> list[tuple[tuple[Any, ...], str]]:
    loc = ("link", "encoding")
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return [(loc, f"unknown text encoding {encoding!r}")]
    # Codecs such as base64 or rot13 are transforms, not text encodings; the attribute is
    # private to codecs but is how the codecs module itself tells them apart.
    if not getattr(info, "_is_text_encoding", True):
        return [(loc, f"{encoding!r} is not a text encoding")]
    try:
        same = all(
            probe.encode(encoding) == probe.encode("ascii")
            for probe in (_CONTROL_PROBE, _ASCII_PROBE)
        )
    except UnicodeError:
        same = False
    if not same:
        return [(loc, f"{encoding!r} is not ASCII-compatible (line ends and escapes are bytes)")]
    return []


def _pattern_problems(
    key: str,
    pattern: str,
    *,
    required: set[str] | None = None,
    allowed: set[str] | None = None,
    any_of: bool = False,
) -> list[tuple[tuple[Any, ...], str]]:
    loc = ("link", key)
    try:
        compiled = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        return [(loc, f"not a regular expression: {exc}")]
    groups = set(compiled.groupindex)
    problems: list[tuple[tuple[Any, ...], str]] = []
    if required:
        missing = required - groups
        if any_of and missing == required:
            names = " or ".join(f"(?P<{g}>...)" for g in sorted(required))
            problems.append((loc, f"needs a named group {names}"))
        elif not any_of and missing:
            names = ", ".join(f"(?P<{g}>...)" for g in sorted(missing))
            problems.append((loc, f"needs the named group(s) {names}"))
    if allowed is not None and groups - allowed:
        problems.append((loc, f"unknown named group(s): {', '.join(sorted(groups - allowed))}"))
    if compiled.match(""):
        problems.append((loc, "matches an empty line; it would match every line"))
    return problems


@dataclass(frozen=True)
class IdentityPatterns:
    """The compiled identity patterns of a line-kv or print-capture profile."""

    patient_id: re.Pattern[str] | None
    patient_name: re.Pattern[str] | None
    accession_number: re.Pattern[str] | None

    @classmethod
    def of(cls, link: LineKvProtocol | PrintCaptureProtocol) -> IdentityPatterns:
        """Compile a (validated) profile's patterns."""

        def compiled(pattern: str | None) -> re.Pattern[str] | None:
            return re.compile(pattern, re.MULTILINE) if pattern is not None else None

        return cls(
            compiled(link.patient_id_pattern),
            compiled(link.patient_name_pattern),
            compiled(link.accession_pattern),
        )

    def find(self, text: str) -> tuple[dict[str, str], list[Note]]:
        """Identity values in ``text`` by field name, and notes on values that cannot be used."""
        found: dict[str, str] = {}
        notes: list[Note] = []
        for field, pattern in (
            ("patient_id", self.patient_id),
            ("patient_name", self.patient_name),
            ("accession_number", self.accession_number),
        ):
            match = pattern.search(text) if pattern is not None else None
            value = _identity_value(field, match) if match is not None else ""
            if not value:
                continue
            if len(value) > _IDENTITY_LIMITS[field] or any(ord(c) < 0x20 for c in value):
                # Never shortened or cleaned: a cut identifier could name another patient.
                notes.append(Note("identity_unusable", f"{field}: {len(value)} characters"))
                continue
            found[field] = value
        return found, notes


def merge_identity(known: PatientIdentity, found: dict[str, str]) -> PatientIdentity:
    """``known`` completed by ``found`` (what was found first wins)."""
    if not found:
        return known
    return PatientIdentity(
        patient_id=known.patient_id or found.get("patient_id"),
        patient_name=known.patient_name or found.get("patient_name"),
        accession_number=known.accession_number or found.get("accession_number"),
        birth_date=known.birth_date,
        sex=known.sex,
    )


def _identity_value(field: str, match: re.Match[str]) -> str:
    groups = match.groupdict()
    if field == "patient_name" and "patient_name" not in groups:
        family = (groups.get("family") or "").strip()
        given = (groups.get("given") or "").strip()
        return f"{family}^{given}" if given else family
    return (groups.get(field) or "").strip()


def make_engine(profile: DeviceProfile, source: str, max_message_bytes: int) -> ProtocolEngine:
    """The protocol engine for ``profile``'s link, for one port session."""
    link = profile.link
    if isinstance(link, AstmProtocol):
        from gateway.ingest.serial.astm_link import AstmReceiver

        return AstmReceiver(profile, source, max_message_bytes)
    if isinstance(link, LineKvProtocol):
        from gateway.ingest.serial.linekv import LineKvEngine

        return LineKvEngine(profile, source, max_message_bytes)
    if isinstance(link, PrintCaptureProtocol):
        from gateway.ingest.serial.printcap import PrintCaptureEngine

        return PrintCaptureEngine(profile, source, max_message_bytes)
    raise AssertionError(f"no engine for protocol {link!r}")  # the model's union is closed
