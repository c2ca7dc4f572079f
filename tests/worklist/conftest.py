"""Fixtures for the worklist tests: a DCMTK wlmscpfs RIS that is always stopped at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.worklist.wlmfiles import WlmScp

MakeRis = Callable[..., WlmScp]


@pytest.fixture
def make_ris(tmp_path: Path) -> Iterator[MakeRis]:
    """Build (not start) wlmscpfs peers under tmp_path; every one is stopped when the test ends."""
    made: list[WlmScp] = []

    def make(**kwargs: Any) -> WlmScp:
        ris = WlmScp(tmp_path / f"wlm{len(made)}", **kwargs)
        made.append(ris)
        return ris

    yield make
    for ris in made:
        ris.stop()
