"""Fixtures for the spool tests: a spool on tmp_path driven by a FakeClock."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.spool.store import Spool

MakeSpool = Callable[..., Spool]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_spool(tmp_path: Path, clock: FakeClock) -> Iterator[MakeSpool]:
    """Open spools on tmp_path/state; every one is closed when the test ends."""
    opened: list[Spool] = []

    def make(
        destinations: Sequence[str] = ("pacs",),
        max_bytes: int = 10_000_000,
        *,
        recover: bool = True,
        **kwargs: object,
    ) -> Spool:
        spool = Spool(tmp_path / "state", destinations, max_bytes, clock, **kwargs)  # type: ignore[arg-type]
        spool.open(recover=recover)
        opened.append(spool)
        return spool

    yield make
    for spool in opened:
        spool.close()


@pytest.fixture
def spool(make_spool: MakeSpool) -> Spool:
    return make_spool(("pacs", "archive"))
