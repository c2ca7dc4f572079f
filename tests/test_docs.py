"""What docs/ and README.md name must exist (issue 11 item 16): keys, verbs, modules, events, links.

Extracted from every ``docs/*.md`` and ``README.md``:

* **config keys**: ``[section] key`` and ``[section]`` / ``[[section]]`` in backticks (also
  ``[section] key = value``), ``section.key`` in backticks when ``section`` is a top-level table
  of the config, and every key of a fenced ``toml`` block; checked against the pydantic model
  (gateway/config.py), as the configuration reference is;
* **CLI verbs**: ``dicom-gateway <verb> [<subverb>]`` wherever a command starts (line start,
  a backtick, ``sudo``, a pipe, ``.../bin/dicom-gateway``); checked against ``build_parser()``;
* **module paths**: ``gateway/....py`` (and ``tests/``, ``systemd/``, ... paths in backticks) must
  be files or folders of the tree; ``gateway.x.y`` must import (the tail may name attributes);
* **log events**: ``"event": "<name>"`` (as the JSON log line shows it, the form
  docs/troubleshooting.md uses) must be a string literal in gateway/;
* **relative links** ``[text](path#anchor)``: the file must exist, the anchor must be a heading.

``ALLOWED`` lists deliberate mentions of what does not exist, each with its reason.
"""

from __future__ import annotations

import argparse
import importlib
import re
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.cli import build_parser
from gateway.config import GatewayConfig
from gateway.ingest.serial.profile import DeviceProfile

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# (doc file name, what is named) -> why it may name something that does not exist.
ALLOWED: dict[tuple[str, str], str] = {
    ("updates.md", "path gateway/update/trusted_root.json"): (
        "written into the release's virtualenv by `release build --trusted-root`, not in the tree"
    ),
}

# A backticked name ending so is a file (gateway.toml, web.key, gateway.csr) or a host name
# (gateway.example.org), not a key or a module.
FILE_SUFFIXES = (
    *(".toml", ".py", ".json", ".jsonl", ".sqlite", ".pem", ".key", ".crt", ".md", ".service"),
    *(".timer", ".conf", ".sock", ".log", ".txt", ".cfg", ".dcm", ".png", ".pdf", ".gz", ".tar"),
    *(".whl", ".lock", ".tmp", ".html", ".css", ".js", ".yaml", ".yml", ".sh", ".rules"),
    *(".csr", ".der", ".p12", ".org", ".com", ".net", ".local", ".lan"),
)
TREE_DIRS = ("gateway/", "tests/", "systemd/", "hardware/", "image-build/", "bench/", "docs/")


@dataclass(frozen=True)
class Mention:
    """One thing a doc names, where."""

    doc: Path
    line: int
    kind: str  # config, verb, module, path, event, link
    text: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.doc.name, f"{self.kind} {self.text}")

    def __str__(self) -> str:
        where = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc.name
        return f"{where}:{self.line}: {self.kind} {self.text}"


# -- the config model ---------------------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (a union of device profiles gives several)."""
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in typing.get_args(annotation):
        found += _models(arg)
    return found


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return typing.get_origin(annotation) is typing.Annotated and _is_list(
        typing.get_args(annotation)[0]
    )


def config_tables(root: type[BaseModel]) -> dict[str, set[str]]:
    """Every table path of a model ("", "gateway", "destination.tls", ...) and its keys."""
    tables: dict[str, set[str]] = {}

    def walk(models: list[type[BaseModel]], path: str) -> None:
        keys = tables.setdefault(path, set())
        for model in models:
            for name, field in model.model_fields.items():
                keys.add(name)
                sub = _models(field.annotation)
                if sub:
                    walk(sub, f"{path}.{name}" if path else name)

    walk([root], "")
    return tables


TABLES = config_tables(GatewayConfig)
TOP = TABLES[""]
# A device profile's own tables ([link], [[measurement]], ...: docs/serial.md) are checked too.
PROFILE_TABLES = {k: v for k, v in config_tables(DeviceProfile).items() if k}
ALL_KEYS = set().union(*TABLES.values(), *PROFILE_TABLES.values())


def config_problem(table: str, key: str | None) -> str | None:
    keys = TABLES.get(table, PROFILE_TABLES.get(table))
    if keys is None:
        return f"no table [{table}]"
    if key is not None and key not in keys:
        return f"no key {key} in [{table}]" + _did_you_mean(key, keys)
    return None


UNITS = {"seconds", "minutes", "hours", "days", "ms", "bytes", "kb", "mb", "mib", "gib", "percent"}


def _did_you_mean(name: str, keys: set[str]) -> str:
    """The key that differs from ``name`` in its unit only (``_seconds`` for ``_minutes``)."""
    stem, _, unit = name.rpartition("_")
    if unit not in UNITS:
        return ""
    near = sorted(
        k for k in keys if k.rpartition("_")[::2] in {(stem, u) for u in UNITS} - {(stem, unit)}
    )
    return f" (the key is {near[0]})" if near else ""


def near_miss_problem(name: str) -> str | None:
    """A bare ``study_window_seconds``: no such key, but one in another unit exists."""
    if name in ALL_KEYS:
        return None
    hint = _did_you_mean(name, ALL_KEYS)
    return f"no key {name}{hint}" if hint else None


def dotted_config_problem(dotted: str) -> str | None:
    """``destination.tls.ca``: tables, then the last part a key (or a table)."""
    parts = re.sub(r"\[\d+\]", "", dotted).split(".")
    for cut in range(len(parts), 0, -1):
        table = ".".join(parts[:cut])
        if table in TABLES:
            rest = parts[cut:]
            if not rest:
                return None
            if len(rest) == 1 and rest[0] in TABLES[table]:
                return None
            if f'"{dotted}"' in SOURCE_TEXT or f"``{dotted}``" in SOURCE_TEXT:
                return None  # a name the code uses or documents (update.commit), not a key
            return f"no key {'.'.join(rest)} in [{table}]"
    return f"no table [{parts[0]}]"


def toml_problems(text: str) -> list[str]:
    """Keys of a TOML example that the config model does not have."""
    data = tomllib.loads(text)
    problems: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            child = f"{path}.{key}" if path else key
            if path not in TABLES or key not in TABLES[path]:
                problems.append(f"no key {key} in [{path}]" if path else f"no table [{key}]")
                continue
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict) and child in TABLES:
                    walk(item, child)

    walk(data, "")
    return problems


# -- the CLI ------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:  # argparse has no public way to list sub-commands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


VERBS = _subparsers(build_parser()) or {}


def verb_problem(verb: str, sub: str | None) -> str | None:
    if verb not in VERBS:
        return f"no verb {verb!r}"
    subs = _subparsers(VERBS[verb])
    if subs is None or sub is None:
        return None
    for one in sub.split("|"):
        if one not in subs:
            return f"no {verb} {one!r} (has: {', '.join(sorted(subs))})"
    return None


# -- modules and events -------------------------------------------------------------------------


def module_problem(dotted: str) -> str | None:
    """``gateway.spool.store`` or ``gateway.spool.store.Spool.open``: a module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        if (
            not (ROOT / Path(*parts[:cut])).with_suffix(".py").is_file()
            and not (ROOT / Path(*parts[:cut]) / "__init__.py").is_file()
        ):
            continue
        obj: Any = importlib.import_module(name)
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return f"{name} has no {attr}"
            obj = getattr(obj, attr)
        return None
    return "no such module"


SOURCE_TEXT = "\n".join(p.read_text("utf-8") for p in sorted((ROOT / "gateway").rglob("*.py")))


def event_problem(name: str) -> str | None:
    if f'"{name}"' in SOURCE_TEXT or f"'{name}'" in SOURCE_TEXT:
        return None
    return "no log event of that name in gateway/"


# -- links --------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    in_code = False
    for line in path.read_text("utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def link_problem(doc: Path, target: str) -> str | None:
    path_part, _, anchor = target.partition("#")
    path = (doc.parent / path_part).resolve() if path_part else doc
    if not path.exists():
        return "no such file"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"no heading #{anchor} in {path.name}"
    return None


# -- extraction ---------------------------------------------------------------------------------

BACKTICKS = re.compile(r"`([^`\n]+)`")
SECTION_KEY = re.compile(r"^\[\[?([a-z_][a-z0-9_.]*)\]\]?(?:\s+([a-z_][a-z0-9_]*))?(?:\s*=.*)?$")
DOTTED = re.compile(r"^[a-z_][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z_][a-z0-9_]*(?:\[\d+\])?)+$")
# A command starts at a line, a backtick, sudo/env/|/&&/;/$, or a path ending in bin/.
VERB = re.compile(
    r"(?:^|(?<=[\s`(;|&$]))(?:[\w./-]*/bin/)?dicom-gateway[ \t]+([a-z][a-z-]*)"
    r"(?:[ \t]+([a-z][a-z|-]*)(?![\w.]))?",
    re.MULTILINE,
)
# Options whose argument is a user or group named dicom-gateway, not the command.
NOT_A_COMMAND = re.compile(r"(?:-[ugoG]|-aG|--user|--group|usermod\s+\S+)\s+$")
MODULE = re.compile(r"(?<![\w/.-])(gateway(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?![\w/-])")
_TREE = "|".join(map(re.escape, TREE_DIRS))
TREE_PATH = re.compile(rf"(?<![\w/.-])((?:{_TREE})[\w./*<>{{}}-]*)")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
EVENT = re.compile(r'"event":\s*"([^"]+)"')
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def _prose_and_code(text: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, line, the fenced block's language or None for prose)."""
    lang: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            lang = None if lang is not None else (line[3:].strip() or "text")
            continue
        yield number, line, lang


def _toml_blocks(text: str) -> Iterator[tuple[int, str]]:
    for match in re.finditer(r"^```toml\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        yield text[: match.start()].count("\n") + 2, match.group(1)


def mentions(doc: Path) -> Iterator[tuple[Mention, str | None]]:
    """Every mention in ``doc`` with its problem (None: it exists)."""
    text = doc.read_text("utf-8")
    for line_no, block in _toml_blocks(text):
        for problem in toml_problems(block):
            yield Mention(doc, line_no, "config", f"(toml example) {problem}"), problem
    for number, line, lang in _prose_and_code(text):

        def found(
            kind: str, what: str, problem: str | None, at: int = number
        ) -> tuple[Mention, str | None]:
            return Mention(doc, at, kind, what), problem

        for span in BACKTICKS.findall(line) if lang is None else []:
            span = span.strip()
            if span.endswith(tuple(FILE_SUFFIXES)):
                continue
            section = SECTION_KEY.match(span)
            if section:
                table, key = section.group(1), section.group(2)
                what = f"[{table}]" + (f" {key}" if key else "")
                yield found("config", what, config_problem(table, key))
            elif SNAKE.match(span):
                problem = near_miss_problem(span)
                if problem:
                    yield found("config", span, problem)
            elif DOTTED.match(span) and span.split(".")[0].split("[")[0] in TOP:
                if span.startswith("gateway.") and module_problem(span) is None:
                    continue  # a module path, checked below
                if span.startswith("gateway.") and span.split(".")[1] not in TABLES["gateway"]:
                    continue  # a module path that does not resolve: reported below
                yield found("config", span, dotted_config_problem(span))
        for match in VERB.finditer(line):
            if NOT_A_COMMAND.search(line[: match.start()]):
                continue
            verb, sub = match.group(1), match.group(2)
            what = f"dicom-gateway {verb}" + (f" {sub}" if sub else "")
            yield found("verb", what, verb_problem(verb, sub))
        for match in TREE_PATH.finditer(BACKTICKS.sub(" ", line) if lang is None else ""):
            path = match.group(1).rstrip(".,:;")
            if path.endswith(".py") and not (ROOT / path).exists():
                yield found("path", path, "no such file or folder")  # a bare module file
        for match in MODULE.finditer(line):
            dotted = match.group(1).rstrip(".")
            if dotted.endswith(tuple(s.lstrip(".") for s in FILE_SUFFIXES)) or (
                len(dotted.split(".")) == 2 and dotted.split(".")[1] in TABLES["gateway"]
            ):
                continue  # gateway.toml, or the [gateway] key gateway.state_dir
            yield found("module", dotted, module_problem(dotted))
        spans = " ".join(BACKTICKS.findall(line)) if lang is None else line
        for match in TREE_PATH.finditer(spans):
            path = match.group(1).rstrip(".,:;")
            if any(c in path for c in "<>*{}") or path.endswith("/..."):
                continue  # a pattern, not a path
            exists = (ROOT / path).exists()
            yield found("path", path, None if exists else "no such file or folder")
        for name in EVENT.findall(line):
            yield found("event", name, event_problem(name))
        for target in LINK.findall(line) if lang is None else []:
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            yield found("link", target, link_problem(doc, target))


def problems_in(docs: list[Path]) -> list[str]:
    out = []
    for doc in docs:
        for mention, problem in mentions(doc):
            if problem is not None and mention.key not in ALLOWED:
                out.append(f"{mention}: {problem}")
    return out


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_everything_a_doc_names_exists(doc: Path) -> None:
    assert problems_in([doc]) == []


def test_the_troubleshooting_guide_names_only_real_log_events() -> None:
    guide = ROOT / "docs" / "troubleshooting.md"
    events = [m for m, _ in mentions(guide) if m.kind == "event"]
    assert len(events) >= 10  # the guide is written around them
    assert [str(m) for m, problem in mentions(guide) if m.kind == "event" and problem] == []


def test_every_allowance_is_still_needed() -> None:
    named = {m.key for doc in DOCS for m, problem in mentions(doc) if problem is not None}
    assert sorted(set(ALLOWED) - named) == []


def test_the_architecture_lists_every_service_the_daemon_starts() -> None:
    # Issue 11 item 16: the thread list stopped at watch:NAME (no serial, local-api, web).
    import gateway.daemon

    started = re.findall(r"^\s+\d+\.\s+(\S+)\s+-", gateway.daemon.__doc__ or "", re.MULTILINE)
    assert "local-api" in started and "web" in started  # the docstring's list is read
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    threads = text.split("## Threads", 1)[1].split("\n## ", 1)[0]
    assert [name for name in started if f"`{name}`" not in threads] == []


def test_the_extraction_catches_what_it_should(tmp_path: Path) -> None:
    """Each rule on a doc written to fail it, and the forms that must not be taken for names."""
    bad = tmp_path / "bad.md"
    (tmp_path / "other.md").write_text("# Real heading\n", "utf-8")
    bad.write_text(
        "\n".join(
            [
                "Set `[spool] max_bytes` and `[binding] study_window_seconds`.",
                "Or `dicom_listener.no_such_key`; `destination.tls.ca` is fine.",
                "Files within `study_window_seconds`; `delivery_id` is a field, not a key.",
                "Run `dicom-gateway status` or `dicom-gateway queue frobnicate`.",
                "See `gateway/forward/nothing.py` and `gateway.spool.nowhere`.",
                'Look for `"event": "no_such_event"` and `"event": "destination_rejected"`.',
                "[broken](missing.md), [anchor](other.md#no-such), [ok](other.md#real-heading).",
                "```toml",
                "[gateway]",
                "ae_title = 'X'",
                "study_window_seconds = 3",
                "```",
                "sudo usermod -aG dicom-gateway alice; `gateway.toml`; `web.key`.",
                "`/opt/dicom-gateway/current/bin/dicom-gateway check-config`",
            ]
        )
        + "\n",
        "utf-8",
    )
    found = [p.split(": ", 1)[1] for p in problems_in([bad])]
    assert found == [
        "config (toml example) no key study_window_seconds in [gateway]: "
        "no key study_window_seconds in [gateway]",
        "config [spool] max_bytes: no table [spool]",
        "config [binding] study_window_seconds: no table [binding]",
        "config dicom_listener.no_such_key: no key no_such_key in [dicom_listener]",
        "config study_window_seconds: no key study_window_seconds "
        "(the key is study_window_minutes)",
        "verb dicom-gateway status: no verb 'status'",
        "verb dicom-gateway queue frobnicate: no queue 'frobnicate' "
        "(has: list, purge, retry, show)",
        "module gateway.spool.nowhere: gateway.spool has no nowhere",
        "path gateway/forward/nothing.py: no such file or folder",
        "event no_such_event: no log event of that name in gateway/",
        "link missing.md: no such file",
        "link other.md#no-such: no heading #no-such in other.md",
    ]
