"""The MWL benchmark runs end to end on a small worklist and refuses answers that differ."""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from bench.common import BenchError
from bench.mwl import bench_shape, make_client, start_gateway, start_wlmscpfs
from bench.mwl_clients import parse_findscu_log
from bench.mwl_data import GRACE_HOURS, fill_cache, generate, shapes, write_wl_files
from gateway.clock import SystemClock
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import MODALITY_WORKLIST_FIND
from gateway.worklist.item import WorklistItem
from gateway.worklist.matching import matches
from gateway.worklist.mwl import MwlService
from tests.peers import require_tool
from tests.worklist.factory import make_item, mwl_dataset

REPO = Path(__file__).resolve().parents[2]
# The cache expires steps of past days, so the worklist is built around the real today.
TODAY = datetime.date.today()


def small_run(tmp_path: Path, *client: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = tmp_path / "results.json"
    args = ["--small", *client, "--out", str(out), "--work-dir", str(tmp_path / "work")]
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
    return proc, json.loads(out.read_text())


@pytest.mark.peers
def test_small_run_times_findscu_in_process_and_whole_for_both_servers(tmp_path: Path) -> None:
    require_tool("wlmscpfs")
    require_tool("findscu")
    proc, results = small_run(tmp_path)  # findscu is the default modality
    assert "| gateway/wlmscpfs |" in proc.stdout
    assert "in_process p95 ms | wall median ms |" in proc.stdout
    assert results["setup"]["client"] == "findscu"
    assert results["setup"]["measures"] == ["in_process", "wall"]
    assert set(results["shapes"]) == {"station", "name", "patient"}
    for shape in results["shapes"].values():
        assert shape["matches"] > 0
        for server in ("gateway", "wlmscpfs"):
            stats = shape[server]
            assert stats["queries"] == 10
            inside, whole = stats["measures"]["in_process"], stats["measures"]["wall"]
            assert 0 < inside["median_ms"] <= inside["p95_ms"]
            # Process start-up and DCMTK's dictionary are outside the in-process measure.
            assert inside["median_ms"] < whole["median_ms"]
            assert stats["p95_ms"] == inside["p95_ms"]  # the goal is judged on the first
        assert shape["gateway_over_wlmscpfs"]["p95"] > 0
        assert isinstance(shape["goal_met"], bool)
    assert results["setup"]["items"] == 1000
    assert results["machine"]["nproc"] >= 1
    assert len(list((tmp_path / "work" / "findscu").glob("query-*.dcm"))) == 3


@pytest.mark.peers
def test_small_run_with_pynetdicom_times_the_association(tmp_path: Path) -> None:
    require_tool("wlmscpfs")
    proc, results = small_run(tmp_path, "--client", "pynetdicom")
    assert "association median ms |" in proc.stdout
    assert results["setup"]["client"] == "pynetdicom"
    for shape in results["shapes"].values():
        for server in ("gateway", "wlmscpfs"):
            stats = shape[server]
            assert stats["queries"] == 10
            assert 0 < stats["median_ms"] == stats["measures"]["association"]["median_ms"]


@pytest.mark.peers
@pytest.mark.parametrize("client", ["pynetdicom", "findscu"])
def test_a_server_missing_an_item_fails_the_run(tmp_path: Path, client: str) -> None:
    require_tool("wlmscpfs")
    require_tool("findscu")
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
            bench_shape(station, servers, 1, make_client(client, tmp_path))
    finally:
        for server in servers:
            server.stop()


FINDSCU_LOG = b"""1795555124.918.967 Requesting Association
1795555124.919.001 (0008,0050) SH (no value available)                     #   0, 0 AccessionNumber
1795555124.931.200 (0008,0050) SH [ACC0000012]                             #  10, 1 AccessionNumber
1795555124.931.900 (0008,0050) SH [ACC0000345 ]                            #  10, 1 AccessionNumber
1795555124.940.113 Received Final Find Response (Success)
"""


def test_findscu_log_gives_the_request_time_and_each_answer() -> None:
    requested, final, found = parse_findscu_log(FINDSCU_LOG)
    assert requested == pytest.approx(1795555124.918967, abs=1e-6)
    assert final is True
    assert found == ["ACC0000012", "ACC0000345"]  # not the request's empty key


def test_findscu_log_without_a_success_final_response_is_not_an_answer() -> None:
    failed = FINDSCU_LOG.replace(b"(Success)", b"(Failed: Unable to process)")
    assert parse_findscu_log(failed)[1] is False
    assert parse_findscu_log(FINDSCU_LOG.splitlines()[-1])[0] is None


def test_the_worklist_is_deterministic_and_varied() -> None:
    first, second = generate(500, TODAY), generate(500, TODAY)
    assert [s.dataset for s in first] == [s.dataset for s in second]
    assert {s.date for s in first} == {
        f"{TODAY + datetime.timedelta(days=d):%Y%m%d}" for d in range(-3, 4)
    }
    assert len({s.modality for s in first}) > 3 and len({s.station for s in first}) > 10
    charsets = {str(s.charset) for s in first}
    assert {"None", "ISO_IR 100", "ISO_IR 192", "['', 'ISO 2022 IR 87']"} <= charsets


# -- the date index behind the benchmark's numbers -----------------------------------------------
# MwlService reads only the records of the query's step date when it names one plain date; these
# prove that it answers exactly what matching every cached item one by one answers, in order.


def _two_step_item(accession: str, first: str, second: str) -> WorklistItem:
    ds = mwl_dataset(accession_number=accession, step_id=f"S-{accession}", start_date=first)
    other = Dataset()
    other.update(ds.ScheduledProcedureStepSequence[0])
    other.ScheduledProcedureStepStartDate = second
    other.Modality = "CT"
    ds.ScheduledProcedureStepSequence.append(other)
    return WorklistItem.from_dataset(ds)


def _query(date: str, modality: str = "US") -> Dataset:
    step = Dataset()
    step.ScheduledProcedureStepStartDate = date
    step.Modality = modality
    step.ScheduledStationAETitle = ""
    ds = Dataset()
    ds.AccessionNumber = ""
    ds.PatientName = ""
    ds.ScheduledProcedureStepSequence = DicomSequence([step])
    return ds


def _event(identifier: Dataset) -> SimpleNamespace:
    return SimpleNamespace(
        identifier=identifier,
        request=SimpleNamespace(AffectedSOPClassUID=MODALITY_WORKLIST_FIND),
        assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title="MODALITY")),
        is_cancelled=False,
    )


@pytest.fixture(scope="module")
def indexed_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorklistCache]:
    day = f"{TODAY:%Y%m%d}"
    tomorrow = f"{TODAY + datetime.timedelta(days=1):%Y%m%d}"
    with config.disable_value_validation():  # ACR-NEMA dotted dates, as some RIS send
        odd = [
            make_item(accession_number="DOTS", step_id="D", start_date=f"{TODAY:%Y.%m.%d}"),
            make_item(accession_number="PAD", step_id="P", start_date=f"{day} "),
            make_item(accession_number="MULTI", step_id="M", start_date=f"{tomorrow}\\{day}"),
            make_item(accession_number="NODATE", step_id="N", start_date=""),
            _two_step_item("TWO", tomorrow, day),
        ]
    generated = [WorklistItem.from_dataset(s.dataset) for s in generate(600, TODAY)]
    path = tmp_path_factory.mktemp("index") / "worklist.sqlite"
    cache = WorklistCache(path, SystemClock(), GRACE_HOURS)
    cache.open()
    cache.replace(odd + generated, time.time())
    yield cache
    cache.close()


@pytest.mark.parametrize(
    "date",
    ["today", "tomorrow", "today-range", "dotted", "list", "", "19990101"],
)
@pytest.mark.parametrize("modality", ["US", "CT", ""])
def test_the_date_index_answers_what_a_full_scan_answers(
    indexed_cache: WorklistCache, date: str, modality: str
) -> None:
    day = f"{TODAY:%Y%m%d}"
    tomorrow = f"{TODAY + datetime.timedelta(days=1):%Y%m%d}"
    value = {
        "today": day,
        "tomorrow": tomorrow,
        "today-range": f"{day}-{day}",
        "dotted": f"{TODAY:%Y.%m.%d}",
        "list": f"{day}\\{tomorrow}",
    }.get(date, date)
    service = MwlService(indexed_cache, None, 1.0, logging.getLogger("test.mwl"))
    # Dotted dates are not valid DA: pydicom warns about them, which is not what is tested here.
    with config.disable_value_validation():
        identifier = _query(value, modality)
        answered = [
            str(ds.AccessionNumber)
            for status, ds in service.handle_find(_event(identifier))
            if status == 0xFF00 and ds is not None
        ]
        scanned = [
            item.accession_number
            for item in indexed_cache.items()
            if matches(identifier, item.dataset())
        ]
    assert answered == scanned
    if date == "today" and modality in ("US", ""):
        assert {"DOTS", "PAD", "MULTI"} <= set(answered)
    if date == "today" and modality == "CT":
        assert "TWO" in answered
