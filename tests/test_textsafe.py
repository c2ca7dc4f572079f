"""No value can forge a line: the escaping rules (gateway/textsafe.py) and the sinks that use them.

Issue 11 item 4. Strings come from hypothesis with every code point allowed, lone surrogates
included (a drop-folder file name that was not UTF-8 arrives as one).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit import AuditLog
from gateway.clock import FakeClock
from gateway.logsetup import JsonLineFormatter
from gateway.textsafe import (
    field,
    json_line,
    one_line,
    parse_field,
    parse_record,
    record,
    safe_lines,
)

# Every code point, surrogates and controls too (hypothesis leaves out category Cs by default).
ANY_TEXT = st.text(st.characters(blacklist_categories=()))
# The characters some reader takes for the end of a line (str.splitlines' list).
LINE_ENDS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
FORGED = 'eve\r\n2026-12-07T09:00:00.000Z web:eng "user remove"\nevent=login user=eng'


def lines_of(text: str) -> list[str]:
    return text.splitlines()


@given(ANY_TEXT)
def test_a_field_is_one_line_and_gives_back_its_value(value: str) -> None:
    made = field(value)
    assert len(lines_of(made)) == 1
    assert not any(c in made for c in LINE_ENDS)
    made.encode("utf-8")  # lone surrogates are escaped, so it always encodes
    assert parse_field(made) == value


@given(st.lists(ANY_TEXT, max_size=5))
def test_a_record_is_one_line_and_splits_back_into_its_values(values: list[str]) -> None:
    line = record(values)
    assert len(lines_of(line)) <= 1
    assert parse_record(line) == values


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("web:alice", "web:alice"),
        ("Müller", "Müller"),
        ("login failed", '"login failed"'),
        ("", '""'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("x\r\ny", '"x\\r\\ny"'),
        ("x\u2028y\x85", '"x\\u2028y\\u0085"'),
        ("\u202eevil", '"\\u202eevil"'),  # a right-to-left override would reorder the line
    ],
)
def test_plain_values_stay_readable_and_others_are_quoted(value: str, written: str) -> None:
    assert field(value) == written


@given(ANY_TEXT)
def test_json_line_is_one_line_that_loads_back(value: str) -> None:
    line = json_line({"user": value, value: [value]})
    assert len(lines_of(line)) == 1
    line.encode("utf-8")
    assert json.loads(line) == {"user": value, value: [value]}


@given(ANY_TEXT)
def test_one_line_has_no_line_break_of_any_kind(text: str) -> None:
    shown = one_line(text)
    shown.encode("utf-8")
    assert len(lines_of(shown)) <= 1
    assert not any(c in shown for c in LINE_ENDS)


@given(ANY_TEXT)
def test_safe_lines_keeps_exactly_the_lf_line_breaks(text: str) -> None:
    safe = safe_lines(text)
    safe.encode("utf-8")
    assert safe.count("\n") == text.replace("\r\n", "\n").count("\n")
    assert not any(c in safe for c in LINE_ENDS.replace("\n", ""))


def test_safe_lines_leaves_json_lines_the_same_json() -> None:
    line = json_line({"event": "login failed", "user": "a\u2028b"}, indent=2)
    assert json.loads(safe_lines(line)) == json.loads(line)
    assert safe_lines('path = "C:\\\\x"\n\tkey = 1\r\n') == 'path = "C:\\\\x"\n\tkey = 1\n'


# -- the sinks ------------------------------------------------------------------------------------


@given(ANY_TEXT)
def test_a_log_event_is_one_json_line_whatever_its_values(value: str) -> None:
    record_ = logging.makeLogRecord(
        {"name": "t", "levelno": logging.WARNING, "levelname": "WARNING", "msg": "login failed"}
    )
    record_.user = value
    record_.address = FORGED
    line = JsonLineFormatter().format(record_)
    assert len(lines_of(line)) == 1
    line.encode("utf-8")
    fields = json.loads(line)
    assert (fields["event"], fields["user"], fields["address"]) == ("login failed", value, FORGED)


@given(ANY_TEXT)
def test_an_audit_record_is_one_line_whatever_its_actor(
    tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    log = AuditLog(path, FakeClock())
    log.append(f"web:{value}", "login failed", "address:127.0.0.1", {"typed": value})
    log.append("web:eng", "login", "address:127.0.0.1")
    raw = path.read_bytes().decode("utf-8")
    assert len(lines_of(raw)) == 2
    first, second = log.read()
    assert (first.actor, first.details["typed"], second.actor) == (f"web:{value}", value, "web:eng")


def test_the_forged_user_name_stays_one_audit_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", FakeClock())
    log.append(f"web:{FORGED}", "login failed", "address:127.0.0.1")
    assert len(lines_of((tmp_path / "audit.jsonl").read_text("utf-8"))) == 1
    assert [r.actor for r in log.read()] == [f"web:{FORGED}"]
