"""MwlService: DCMTK findscu queries the gateway's MWL handler, live from wlmscpfs or from cache."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from gateway.clock import SystemClock
from gateway.config import WorklistSection
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import WorklistClient
from gateway.worklist.mwl import MwlService
from gateway.worklist.refresher import WorklistRefresher
from tests.worklist.conftest import MakeRis
from tests.worklist.factory import mwl_dataset
from tests.worklist.mwlpeers import MwlScp, findscu
from tests.worklist.wlmfiles import WlmScp

pytestmark = pytest.mark.peers

TODAY = f"{datetime.date.today():%Y%m%d}"
PEOPLE = [
    ("LAT1", "Müller^Zoë", "ISO_IR 100", "US"),
    ("UTF8", "Grüß^Ωmega", "ISO_IR 192", "US"),
    ("JP87", "Yamada^Tarou=山田^太郎=やまだ^たろう", ["", "ISO 2022 IR 87"], "US"),
    ("ASCII", "Smith^John", None, "US"),
    ("CT1", "Other^Modality", None, "CT"),
]
KEYS = [
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "IssuerOfPatientID",
    "ScheduledProcedureStepSequence[0].Modality=US",
    f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={TODAY}",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
]


def ris_settings(port: int, **extra: object) -> WorklistSection:
    return WorklistSection.model_validate(
        {
            "ae_title": "RIS",
            "host": "127.0.0.1",
            "port": port,
            "connect_timeout": 2,
            "acse_timeout": 2,
            "dimse_timeout": 5,
            "network_timeout": 5,
            **extra,
        }
    )


@pytest.fixture
def ris(make_ris: MakeRis) -> WlmScp:
    ris = make_ris(return_charset="keep")
    for n, (acc, name, charset, modality) in enumerate(PEOPLE):
        ris.add(
            mwl_dataset(
                patient_name=name,
                patient_id=f"P{n}",
                accession_number=acc,
                step_id=f"S{n}",
                start_date=TODAY,
                modality=modality,
            ),
            charset,
        )
    return ris.start()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[WorklistCache]:
    c = WorklistCache(tmp_path / "worklist.sqlite", SystemClock())
    c.open()
    yield c
    c.close()


@pytest.fixture
def scps() -> Iterator[list[MwlScp]]:
    started: list[MwlScp] = []
    yield started
    for scp in started:
        scp.stop()


def serve(scps: list[MwlScp], service: MwlService) -> MwlScp:
    scp = MwlScp(service).start()
    scps.append(scp)
    return scp


def filled(cache: WorklistCache, ris: WlmScp) -> WorklistClient:
    settings = ris_settings(ris.port)
    client = WorklistClient(settings, "EDGE_GW", None)
    refresher = WorklistRefresher(client, cache, settings, SystemClock(), logging.getLogger("t"))
    refresher.refresh_now()
    assert refresher.last_error is None
    return client


def summary(responses: list[Dataset]) -> list[tuple[str, ...]]:
    out = []
    for ds in responses:
        (step,) = ds.ScheduledProcedureStepSequence
        out.append(
            (
                ds.AccessionNumber,
                str(ds.PatientName),
                ds.PatientID,
                ds.StudyInstanceUID,
                step.ScheduledProcedureStepID,
                step.Modality,
            )
        )
    return sorted(out)


def test_findscu_gets_the_same_answers_before_and_during_a_ris_outage(
    tmp_path: Path,
    ris: WlmScp,
    cache: WorklistCache,
    scps: list[MwlScp],
    caplog: pytest.LogCaptureFixture,
):
    client = filled(cache, ris)
    log = logging.getLogger("test.mwl")
    caplog.set_level(logging.INFO, logger="test.mwl")
    scp = serve(scps, MwlService(cache, client, live_timeout=10, logger=log))
    before, _ = findscu(scp.port, KEYS, tmp_path / "before")
    assert [r.source for r in caplog.records if r.getMessage() == "mwl query answered"] == ["live"]
    ris.stop()
    during, _ = findscu(scp.port, KEYS, tmp_path / "during")
    sources = [r.source for r in caplog.records if r.getMessage() == "mwl query answered"]
    assert sources == ["live", "cache"]
    assert summary(before) == summary(during)
    assert sorted(a for a, *_ in summary(during)) == ["ASCII", "JP87", "LAT1", "UTF8"]
    names = {ds.AccessionNumber: str(ds.PatientName) for ds in during}
    assert names["JP87"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert names["LAT1"] == "Müller^Zoë"


def test_responses_hold_exactly_the_requested_keys_and_declare_their_character_set(
    tmp_path: Path, ris: WlmScp, cache: WorklistCache, scps: list[MwlScp]
):
    filled(cache, ris)
    scp = serve(scps, MwlService(cache, None, live_timeout=1, logger=logging.getLogger("t")))
    responses, _ = findscu(scp.port, [*KEYS, "SpecificCharacterSet=ISO_IR 100"], tmp_path / "o")
    by_acc = {ds.AccessionNumber: ds for ds in responses}
    # The query's set when every value fits it, else UTF-8.
    assert by_acc["LAT1"].SpecificCharacterSet == "ISO_IR 100"
    assert by_acc["ASCII"].SpecificCharacterSet == "ISO_IR 100"
    assert by_acc["JP87"].SpecificCharacterSet == "ISO_IR 192"
    assert str(by_acc["JP87"].PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    top = {e.keyword for e in by_acc["LAT1"]}
    assert top == {
        "SpecificCharacterSet",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "StudyInstanceUID",
        "IssuerOfPatientID",
        "ScheduledProcedureStepSequence",
    }
    step_keys = {e.keyword for e in by_acc["LAT1"].ScheduledProcedureStepSequence[0]}
    assert step_keys == {
        "Modality",
        "ScheduledProcedureStepStartDate",
        "ScheduledProcedureStepID",
        "ScheduledStationAETitle",
    }


def test_a_query_without_character_set_gets_none_for_ascii_and_utf8_otherwise(
    tmp_path: Path, ris: WlmScp, cache: WorklistCache, scps: list[MwlScp]
):
    filled(cache, ris)
    scp = serve(scps, MwlService(cache, None, live_timeout=1, logger=logging.getLogger("t")))
    responses, _ = findscu(scp.port, KEYS, tmp_path / "o")
    by_acc = {ds.AccessionNumber: ds for ds in responses}
    assert "SpecificCharacterSet" not in by_acc["ASCII"]
    assert by_acc["LAT1"].SpecificCharacterSet == "ISO_IR 192"


def test_wildcards_ranges_and_pn_case_from_the_cache(
    tmp_path: Path, ris: WlmScp, cache: WorklistCache, scps: list[MwlScp]
):
    filled(cache, ris)
    scp = serve(scps, MwlService(cache, None, live_timeout=1, logger=logging.getLogger("t")))
    yesterday = f"{datetime.date.today() - datetime.timedelta(days=1):%Y%m%d}"
    responses, _ = findscu(
        scp.port,
        [
            "PatientName=mü*".encode("latin-1"),
            "AccessionNumber",
            f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={yesterday}-",
            "SpecificCharacterSet=ISO_IR 100",
        ],
        tmp_path / "o",
    )
    assert [ds.AccessionNumber for ds in responses] == ["LAT1"]


def test_a_ris_slower_than_the_live_timeout_is_answered_from_the_cache(
    tmp_path: Path, make_ris: MakeRis, cache: WorklistCache, scps: list[MwlScp]
):
    fast = make_ris()
    fast.add(mwl_dataset(accession_number="A1", start_date=TODAY))
    fast.start()
    filled(cache, fast)
    fast.stop()
    slow = WlmScp(fast.root, port=fast.port, extra_args=["--sleep-before", "5"])
    slow.start()
    try:
        client = WorklistClient(ris_settings(slow.port), "EDGE_GW", None)
        service = MwlService(cache, client, live_timeout=1, logger=logging.getLogger("t"))
        scp = serve(scps, service)
        responses, _ = findscu(scp.port, KEYS, tmp_path / "o")
        assert [ds.AccessionNumber for ds in responses] == ["A1"]
    finally:
        slow.stop()
