"""Values written where one line is one record: the journal, the audit trail, text exports.

A user name typed at the login form, a file name from a drop folder, a reason typed by an
operator all end up in lines that people and tools read one record a line. Such a value must
never end its line early, start a new one, or pass for another field. The sinks (the log
formatter, the audit log, the support bundle) call these functions; no caller escapes by hand,
so no caller can forget.

Rules (one definition for every sink):

* **Unsafe characters** are those that end, hide or reorder a line for some reader: the C0
  controls U+0000-U+001F (CR, LF, TAB, ...), DEL, the C1 controls U+0080-U+009F (U+0085 is a
  line end to Python's ``splitlines``), the line and paragraph separators U+2028/U+2029, the
  bidirectional overrides and isolates (a terminal shows "rewop" as "power"), and lone
  surrogates (a file name that was not UTF-8, which would not even encode). Every other
  character, umlauts and CJK included, passes unchanged.
* Escapes are JSON's: ``\\n``, ``\\r``, ``\\t``, ``\\"``, ``\\\\`` and ``\\uXXXX`` for the rest, so
  an escaped value means the same inside a JSON string and out of it.
* :func:`json_line`: ``json.dumps`` (non-ASCII kept) with the unsafe characters JSON leaves raw
  (DEL, C1, U+2028/U+2029, bidi controls, lone surrogates) escaped too. Without ``indent`` the
  result is one line; it loads back to the same value.
* :func:`field`: one space-separated field of a text record (the support bundle's
  ``audit.txt``). A value of safe characters with no space, quote, ``=`` or backslash is written
  as it is; any other value (the empty one too) as a JSON string literal. So a field is one
  word or one quoted string, never two fields and never two lines: :func:`parse_field` returns
  the value it was made from, and :func:`parse_record` the values of a :func:`record`.
* :func:`one_line`: a display text that must stay one line (systemd's ``STATUS=``, whose
  protocol is one assignment a line): every unsafe character, LF and TAB too, as ``\\uXXXX``.
  Backslashes stay, so it is for reading, not for parsing back.
* :func:`safe_lines`: a multi-line text (the journal, a config file, a JSON export) with every
  unsafe character escaped except the LF between lines and TAB; CRLF counts as LF. Backslashes
  stay as they are, so a JSON line stays the same JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# Regular-expression classes (escapes, not raw characters, so the source stays plain text).
_BIDI = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_SURROGATES = r"\ud800-\udfff"
_UNSAFE = rf"\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}{_SURROGATES}"
# What JSON's own escaping (json.dumps, ensure_ascii=False) leaves raw.
_RAW_IN_JSON = re.compile(rf"[\x7f-\x9f\u2028\u2029{_BIDI}{_SURROGATES}]")
_UNSAFE_ANYWHERE = re.compile(f"[{_UNSAFE}]")
# All unsafe characters but TAB and LF.
_UNSAFE_IN_TEXT = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}{_SURROGATES}]")
_DECODER = json.JSONDecoder()
_PLAIN_FIELD = re.compile(rf'[^{_UNSAFE} "=\\]+')


def _u(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_line(value: Any, **dumps: Any) -> str:
    """``value`` as JSON with no raw unsafe character (one line unless ``indent`` is given)."""
    # Outside strings JSON holds only ASCII punctuation and whitespace, so each match is inside
    # a string, where \\uXXXX means the same character.
    return _RAW_IN_JSON.sub(_u, json.dumps(value, ensure_ascii=False, **dumps))


def field(value: str) -> str:
    """``value`` as one field of a space-separated record: bare if plain, else JSON-quoted."""
    if _PLAIN_FIELD.fullmatch(value):
        return value
    return json_line(value)


def parse_field(text: str) -> str:
    """The value :func:`field` made ``text`` from."""
    if text.startswith('"'):
        loaded = json.loads(text)
        if not isinstance(loaded, str):
            raise ValueError(f"not a quoted field: {text!r}")
        return loaded
    return text


def record(values: Iterable[str]) -> str:
    """One text record: the values as fields, joined by single spaces (no line end)."""
    return " ".join(field(v) for v in values)


def parse_record(line: str) -> list[str]:
    """The values :func:`record` joined into ``line`` (the inverse, for tools reading it)."""
    values: list[str] = []
    at = 0
    while at < len(line):
        if line[at] == '"':
            loaded, end = _DECODER.raw_decode(line, at)
            if not isinstance(loaded, str):
                raise ValueError(f"not a quoted field at {at}: {line!r}")
            values.append(loaded)
        else:
            end = line.find(" ", at)
            end = len(line) if end < 0 else end
            values.append(line[at:end])
        if end < len(line) and line[end] != " ":
            raise ValueError(f"no space after the field at {at}: {line!r}")
        at = end + 1
    return values


def one_line(text: str) -> str:
    """``text`` with every unsafe character escaped: one line, for display."""
    return _UNSAFE_ANYWHERE.sub(_u, text)


def safe_lines(text: str) -> str:
    """``text`` with its lines kept and every other unsafe character escaped."""
    return _UNSAFE_IN_TEXT.sub(_u, text.replace("\r\n", "\n"))
