"""The dashboard's disk line on a real ext4 with blocks reserved for root, compared with df(1):
the percentage is df's Use% (used / (used + available)), not used / total, and the free space
is what the queue counts when it decides to pause ingest.

Needs root for the loop mount (tests/realfs.py: skipped otherwise, failed under REQUIRE_PEERS=1).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.spool.space import MIB, DiskSpace, used_percent
from gateway.web.pages.dashboard import disk_view
from gateway.web.views import size_text
from tests import realfs
from tests.web.panelkit import MakePanel, panel_factory, services_for

GIB = 1024 * MIB


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from panel_factory(tmp_path)


def _df(path: Path) -> tuple[int, int]:
    """df's Use% and Avail (bytes) for ``path``, from df itself."""
    done = subprocess.run(
        ["df", "--output=pcent,avail", "-B1", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    percent, avail = done.stdout.splitlines()[-1].split()
    return int(percent.rstrip("%")), int(avail)


def test_the_disk_line_says_what_df_says_on_a_disk_with_a_root_reserve(
    tmp_path: Path, make_panel: MakePanel
) -> None:
    with realfs.ext4(tmp_path / "disk", 64 * MIB, reserved_percent=25) as disk:
        services, closers = services_for(disk)
        try:
            panel = make_panel(services)
            filler = disk / "filler"
            with filler.open("wb") as f:
                f.write(b"\xa5" * (16 * MIB))
                f.flush()
                os.fsync(f.fileno())
            percent, avail = _df(services.state_dir)
            st = os.statvfs(services.state_dir)
            by_total = round(100 * (st.f_blocks - st.f_bfree) / st.f_blocks)
            assert percent - by_total >= 5, "the reserve should make the two figures differ"

            view = disk_view(services)
            assert view.used_percent == percent
            assert view.free == size_text(avail)  # the delivery reserve is in place
            page = panel.setup().get("/")
            assert page.status_code == 200
            assert f"{percent}&nbsp;% used" in page.text
            assert f"{size_text(avail)} free" in page.text
            assert "so the queue may still take" in page.text
        finally:
            for close in closers:
                close()


def test_used_percent_rounds_up_as_df_does() -> None:
    # The issue's box: 28 GiB used, 72 GiB available, 252 GiB in all (the rest reserved).
    issue = DiskSpace(total=252 * GIB, free=72 * GIB, read_only=False, used=28 * GIB)
    assert used_percent(issue) == 28
    assert used_percent(DiskSpace(total=100, free=2, read_only=False, used=1)) == 34
    assert used_percent(DiskSpace(total=0, free=0, read_only=False, used=0)) == 0
