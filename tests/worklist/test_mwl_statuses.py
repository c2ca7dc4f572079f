"""MwlService statuses: malformed queries, cancel, failures and the live/cache switch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE

from gateway.clock import SystemClock
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import MODALITY_WORKLIST_FIND, WorklistUnavailable
from gateway.worklist.mwl import MwlService
from tests.worklist.factory import make_item, mwl_dataset
from tests.worklist.mwlpeers import MwlScp

LOG = logging.getLogger("test.mwl")


@dataclass
class Requestor:
    ae_title: str = "MODALITY"


@dataclass
class Assoc:
    requestor: Requestor = field(default_factory=Requestor)


@dataclass
class Request:
    AffectedSOPClassUID: str = MODALITY_WORKLIST_FIND


class FakeEvent:
    """The parts of pynetdicom's C-FIND event the handler reads; cancels after N pendings."""

    def __init__(self, identifier: Dataset, cancel_after: int | None = None) -> None:
        self.identifier = identifier
        self.request = Request()
        self.assoc = Assoc()
        self.cancel_after = cancel_after
        self.yielded = 0

    @property
    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and self.yielded >= self.cancel_after


def run(service: MwlService, ev: FakeEvent) -> list[tuple[int, Dataset | None]]:
    out: list[tuple[int, Dataset | None]] = []
    for status, identifier in service.handle_find(ev):
        code = int(status.Status) if isinstance(status, Dataset) else int(status)
        out.append((code, identifier))
        if code == 0xFF00:
            ev.yielded += 1
    return out


def q(**keys: Any) -> Dataset:
    ds = Dataset()
    with config.disable_value_validation():
        for k, v in keys.items():
            setattr(ds, k, v)
    return ds


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[WorklistCache]:
    c = WorklistCache(tmp_path / "worklist.sqlite", SystemClock())
    c.open()
    c.replace(
        [make_item(accession_number=f"A{n}", step_id=f"S{n}", start_date="") for n in range(5)],
        SystemClock().now(),
    )
    yield c
    c.close()


class FailingRis:
    def __init__(self) -> None:
        self.calls = 0

    def query(self, identifier: Dataset, deadline: float | None = None) -> list[Dataset]:
        self.calls += 1
        raise WorklistUnavailable("RIS down")


class AnsweringRis:
    def query(self, identifier: Dataset, deadline: float | None = None) -> list[Dataset]:
        return [mwl_dataset(accession_number="LIVE", patient_name="Live^One")]


def test_matches_are_pending_then_success(cache: WorklistCache):
    result = run(MwlService(cache, None, 1, LOG), FakeEvent(q(AccessionNumber="A*")))
    assert [s for s, _ in result] == [0xFF00] * 5 + [0x0000]
    assert result[-1][1] is None


def test_cancel_stops_the_answers(cache: WorklistCache):
    result = run(MwlService(cache, None, 1, LOG), FakeEvent(q(AccessionNumber=""), cancel_after=2))
    assert [s for s, _ in result] == [0xFF00, 0xFF00, 0xFE00]


@pytest.mark.parametrize(
    "identifier",
    [
        q(QueryRetrieveLevel="STUDY", PatientID=""),
        q(ScheduledProcedureStepSequence=Sequence([Dataset(), Dataset()])),
        q(
            ScheduledProcedureStepSequence=Sequence(
                [q(ScheduledProcedureStepStartDate="2024-01-05")]
            )
        ),
    ],
)
def test_queries_that_are_not_mwl_shaped_get_a900(cache: WorklistCache, identifier: Dataset):
    result = run(MwlService(cache, None, 1, LOG), FakeEvent(identifier))
    assert [s for s, _ in result] == [0xA900]


def test_an_unknown_character_set_gets_c000(cache: WorklistCache):
    result = run(
        MwlService(cache, None, 1, LOG),
        FakeEvent(q(SpecificCharacterSet="KLINGON", PatientName="")),
    )
    assert [s for s, _ in result] == [0xC000]


def test_another_sop_class_is_refused(cache: WorklistCache):
    ev = FakeEvent(q(PatientName=""))
    ev.request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.1.1"
    assert [s for s, _ in run(MwlService(cache, None, 1, LOG), ev)] == [0x0122]


def test_an_internal_error_is_a_c000_status_not_an_exception():
    class Broken:
        def snapshot(self) -> Any:
            raise RuntimeError("disk on fire")

    result = run(MwlService(Broken(), None, 1, LOG), FakeEvent(q(PatientName="")))
    assert [s for s, _ in result] == [0xC000]


def test_live_answers_win_and_a_failing_ris_is_not_asked_again_for_a_while(
    cache: WorklistCache,
):
    live = run(MwlService(cache, AnsweringRis(), 1, LOG), FakeEvent(q(AccessionNumber="")))
    assert [ds.AccessionNumber for _, ds in live if ds is not None] == ["LIVE"]
    ris = FailingRis()
    service = MwlService(cache, ris, 1, LOG, live_retry_seconds=3600)
    first = run(service, FakeEvent(q(AccessionNumber="")))
    second = run(service, FakeEvent(q(AccessionNumber="")))
    assert len(first) == len(second) == 6
    assert ris.calls == 1


def test_a_real_scu_gets_a900_for_a_query_retrieve_identifier(cache: WorklistCache):
    scp = MwlScp(MwlService(cache, None, 1, LOG)).start()
    try:
        ae = AE(ae_title="SCU")
        ae.add_requested_context(MODALITY_WORKLIST_FIND)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="EDGE_GW")
        assert assoc.is_established
        try:
            statuses = [
                int(status.Status)
                for status, _ in assoc.send_c_find(
                    q(QueryRetrieveLevel="PATIENT", PatientID=""), MODALITY_WORKLIST_FIND
                )
            ]
        finally:
            assoc.release()
        assert statuses == [0xA900]
    finally:
        scp.stop()
