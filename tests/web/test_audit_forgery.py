"""Issue 11 item 4: a user name typed at the login form cannot forge lines of the audit trail.

Through the real HTTPS panel: a stranger submits a user name carrying CR/LF, a line separator
and a whole forged record; an engineer then downloads the support bundle. Its ``audit.txt`` has
one line per audit record, and the stranger's attempt is one of them, naming what was typed.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.panelkit import MakePanel, RunningPanel, csrf_of, panel_factory

FORGED_AT = "2026-12-07t09:00:00.000z"
FORGED = f'eve\r\n{FORGED_AT} web:eng "user remove"\nevent=login user=eng\u2028{FORGED_AT} x y'


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from panel_factory(tmp_path)


def test_a_user_name_with_line_breaks_is_one_line_of_the_bundle_audit_txt(
    make_panel: MakePanel,
) -> None:
    panel: RunningPanel = make_panel()
    engineer = panel.setup()
    stranger = panel.browser()
    assert panel.post_login(stranger, FORGED, "not the password").status_code == 401

    page = engineer.get("/support")
    answer = engineer.post("/support/bundle", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("/audit.txt")]
        audit_txt = archive.read(name).decode("utf-8")

    lines = audit_txt.splitlines()
    assert not any(line.startswith(FORGED_AT) for line in lines), audit_txt
    assert sum("event=login" in line for line in lines) == 1, audit_txt
    # One line per record but the bundle's own download (appended after the bundle was made).
    records = [r for r in panel.audit_lines() if r["action"] != "support.bundle"]
    assert [r["action"] for r in records] == ["user create", "login failed"]
    assert len(lines) == len(records), audit_txt

    from gateway.textsafe import parse_record  # after the checks the old code fails

    typed = FORGED.strip().lower()  # the login form's own normalisation
    assert [parse_record(line)[1:] for line in lines] == [
        ["web:eng", "user create"],
        [f"web:{typed}", "login failed"],
    ]
