"""The MWL benchmark runs end to end on a small worklist and refuses answers that differ."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import BenchError
from bench.mwl import (
    bench_shape,
    fill_cache,
    generate,
    shapes,
    start_gateway,
    start_wlmscpfs,
    write_wl_files,
)
from tests.peers import require_tool

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
# The cache expires steps of past days, so the worklist is built around the real today.
TODAY = datetime.date.today()


def test_small_run_reports_both_servers_with_the_same_answers(tmp_path: Path) -> None:
    require_tool("wlmscpfs")
    out = tmp_path / "results.json"
    args = ["--small", "--out", str(out), "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.mwl", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # A server whose accession numbers differ from the expected set fails the run (exit 1).
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| gateway/wlmscpfs |" in proc.stdout
    results = json.loads(out.read_text())
    assert set(results["shapes"]) == {"station", "name"}
    for shape in results["shapes"].values():
        assert shape["matches"] > 0
        for server in ("gateway", "wlmscpfs"):
            assert shape[server]["queries"] == 10
            assert 0 < shape[server]["median_ms"] <= shape[server]["p95_ms"]
        assert shape["gateway_over_wlmscpfs"]["p95"] > 0
        assert isinstance(shape["goal_met"], bool)
    assert results["setup"]["items"] == 1000
    assert results["machine"]["nproc"] >= 1


def test_a_server_missing_an_item_fails_the_run(tmp_path: Path) -> None:
    require_tool("wlmscpfs")
    steps = generate(300, TODAY)
    station = shapes(steps, TODAY)[0]
    assert station.expected
    write_wl_files(steps, tmp_path / "wlm" / "RIS")
    fill_cache(steps, tmp_path / "worklist.sqlite")
    (tmp_path / "wlm" / "RIS" / f"{min(station.expected)}.wl").unlink()
    servers = [
        start_gateway(tmp_path / "worklist.sqlite", tmp_path / "gateway.log"),
        start_wlmscpfs(tmp_path / "wlm", tmp_path / "wlmscpfs.log"),
    ]
    try:
        with pytest.raises(BenchError, match=r"wlmscpfs returned .* 1 missing"):
            bench_shape(station, servers, 1)
    finally:
        for server in servers:
            server.stop()


def test_the_worklist_is_deterministic_and_varied() -> None:
    first, second = generate(500, TODAY), generate(500, TODAY)
    assert [s.dataset for s in first] == [s.dataset for s in second]
    assert {s.date for s in first} == {
        f"{TODAY + datetime.timedelta(days=d):%Y%m%d}" for d in range(-3, 4)
    }
    assert len({s.modality for s in first}) > 3 and len({s.station for s in first}) > 10
    charsets = {str(s.charset) for s in first}
    assert {"None", "ISO_IR 100", "ISO_IR 192", "['', 'ISO 2022 IR 87']"} <= charsets
