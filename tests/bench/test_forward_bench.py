"""The forwarding benchmark runs end to end on a tiny workload and refuses incomplete runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import BenchError, StoreSCPRunner, make_pki, make_workload
from tests.peers import require_tool

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]


def test_small_run_reports_both_senders_with_rates_and_peak_rss(tmp_path: Path) -> None:
    require_tool("storescp")
    require_tool("storescu")
    out = tmp_path / "results.json"
    args = ["--small", "--out", str(out), "--work-dir", str(tmp_path / "work")]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.forward", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| gateway/storescu |" in proc.stdout
    results = json.loads(out.read_text())
    assert set(results["workloads"]) == {"small", "large"}
    for workload in results["workloads"].values():
        for sender in ("gateway", "gateway-sender-only", "storescu"):
            summary = workload[sender]
            assert summary["runs"] == 1
            assert summary["objects_per_s"] > 0
            assert summary["peak_rss_mib"] is not None and summary["peak_rss_mib"] > 0
            assert {r["objects"] for r in summary["all_runs"]} == {workload["objects"]}
        assert workload["gateway"]["rss_after_imports_mib"] > 0
        assert workload["gateway_over_storescu"]["objects_per_s"] > 0
    assert results["machine"]["nproc"] >= 1


def test_objects_missing_at_storescp_fail_the_run(tmp_path: Path) -> None:
    require_tool("storescp")
    pki = make_pki(tmp_path / "pki")
    workload = make_workload(tmp_path / "files", "tiny", 2, 4096)
    scp = StoreSCPRunner(tmp_path / "received", pki, tmp_path / "storescp.log").start()
    try:
        with pytest.raises(BenchError, match="2 of 2 objects did not arrive"):
            scp.check_all_arrived(workload, "nobody")
    finally:
        scp.stop()


def test_instances_are_deterministic_and_of_the_asked_size(tmp_path: Path) -> None:
    first = make_workload(tmp_path / "a", "w", 2, 512 * 1024)
    second = make_workload(tmp_path / "b", "w", 2, 512 * 1024)
    assert first.uids == second.uids and len(first.uids) == 2
    for a, b in zip(first.files, second.files, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert 512 * 1024 <= a.stat().st_size < 512 * 1024 + 4096
