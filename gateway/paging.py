"""Pages of a listing: which rows were shown out of how many, and where the next page starts.

Every listing an operator reads (CLI, JSON API, panel) shows one page and says so: a listing
that stops at its limit without a word makes the operator believe the queue holds 100 objects
when it holds 340. Pure: the caller counts and fetches, this says what to tell.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class Page:
    """``shown`` rows from ``offset`` (0-based) of ``total``, at most ``limit`` per page."""

    offset: int
    limit: int
    shown: int
    total: int

    @property
    def complete(self) -> bool:
        """True when the page holds every row there is (nothing to say)."""
        return self.offset == 0 and self.shown >= self.total

    @property
    def next_offset(self) -> int | None:
        """Where the next page starts, or None on the last page."""
        after = self.offset + self.shown
        return after if self.shown and after < self.total else None

    @property
    def previous_offset(self) -> int | None:
        """Where the page before starts, or None on the first page."""
        return max(0, self.offset - self.limit) if self.offset > 0 else None

    @property
    def summary(self) -> str:
        """'showing 1-100 of 340' (or 'showing 0 of 340' past the end)."""
        if not self.shown:
            return f"showing 0 of {self.total}"
        return f"showing {self.offset + 1}-{self.offset + self.shown} of {self.total}"

    def cli_note(self) -> str | None:
        """The line a CLI listing ends with when rows are left out, or None when none is."""
        if self.complete:
            return None
        nxt = self.next_offset
        return f"{self.summary}; next: --offset {nxt}" if nxt is not None else self.summary


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, else a usage error saying so."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    return parse


def add_page_arguments(parser: argparse.ArgumentParser, default_limit: int | None) -> None:
    """``--limit`` (``default_limit``; None: all rows) and ``--offset`` for a CLI listing."""
    shown = "all" if default_limit is None else str(default_limit)
    # A limit of 0 would show nothing and no next page; the API refuses it too (limit 1-1000).
    parser.add_argument(
        "--limit", type=_at_least(1), default=default_limit, help=f"rows to show ({shown})"
    )
    parser.add_argument(
        "--offset", type=_at_least(0), default=0, help="rows to skip first (0): the next page"
    )


def print_cli_note(page: Page, as_json: bool, out: TextIO | None = None) -> None:
    """After a CLI listing: say what was left out, on stdout, or on stderr for ``--json``.

    JSON output stays a plain list a script can parse; the note still reaches the person.
    """
    note = page.cli_note()
    if note is not None:
        print(note, file=out or (sys.stderr if as_json else sys.stdout))
