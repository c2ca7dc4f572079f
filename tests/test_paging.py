"""Listings say what they leave out (issue 10 A8): the Page rule, and `queue list` for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.clock import SystemClock
from gateway.paging import Page
from gateway.spool.store import Spool
from tests.harness import write_config
from tests.peers import free_port
from tests.spool.objects import stage

NEXT = "; next: --offset "


@pytest.mark.parametrize(
    ("page", "summary", "next_offset", "previous_offset", "note"),
    [
        (
            Page(0, 100, 100, 340),
            "showing 1-100 of 340",
            100,
            None,
            f"showing 1-100 of 340{NEXT}100",
        ),
        (
            Page(100, 100, 100, 340),
            "showing 101-200 of 340",
            200,
            0,
            f"showing 101-200 of 340{NEXT}200",
        ),
        (Page(300, 100, 40, 340), "showing 301-340 of 340", None, 200, "showing 301-340 of 340"),
        (Page(500, 100, 0, 340), "showing 0 of 340", None, 400, "showing 0 of 340"),
        (Page(0, 100, 7, 7), "showing 1-7 of 7", None, None, None),
        (Page(0, 100, 0, 0), "showing 0 of 0", None, None, None),
    ],
)
def test_a_page_says_what_it_shows_of_how_many_and_where_the_next_starts(
    page: Page,
    summary: str,
    next_offset: int | None,
    previous_offset: int | None,
    note: str | None,
) -> None:
    assert page.summary == summary
    assert page.next_offset == next_offset
    assert page.previous_offset == previous_offset
    assert page.cli_note() == note  # None: everything was shown, nothing to say


def test_queue_list_says_how_many_more_there_are_and_the_offset_shows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, free_port())
    spool = Spool(tmp_path / "state", ["pacs"], 1 << 30, SystemClock())
    spool.open()
    for i in range(130):
        spool.enqueue(stage(spool, i.to_bytes(2, "big")), "export")
    spool.close()

    assert main(["queue", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 100 + 1  # header, the old default of 100 rows, the note
    assert out[-1] == "showing 1-100 of 130; next: --offset 100"

    assert main(["queue", "list", "--offset", "100", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 30 + 1
    assert out[-1] == "showing 101-130 of 130"

    assert main(["queue", "list", "--json", "--limit", "5", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count('"object_id"') == 5  # stdout stays plain JSON for scripts
    assert captured.err.strip() == "showing 1-5 of 130; next: --offset 5"

    assert main(["queue", "list", "--limit", "200", "--config", str(config)]) == 0
    assert "showing" not in capsys.readouterr().out  # all shown: no note


@pytest.mark.parametrize("verb", [["queue", "list"], ["held", "list"]], ids=["queue", "held"])
@pytest.mark.parametrize("limit", ["0", "-3"])
def test_a_limit_below_one_is_refused_with_the_reason(
    verb: list[str], limit: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "--limit 0" would list nothing and give no next page: an operator means no such page.
    config = write_config(tmp_path, free_port())
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--limit", limit, "--config", str(config)])
    assert exit_info.value.code == 2  # argparse's usage error
    assert f"argument --limit: must be 1 or more, not {limit}" in capsys.readouterr().err
