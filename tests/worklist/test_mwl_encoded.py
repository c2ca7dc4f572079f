"""MwlService's encoded answers: reused for the same query shape, never stale or mixed up."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import dsutils

from gateway.clock import SystemClock
from gateway.listener.tuning import EncodedIdentifier
from gateway.worklist.cache import WorklistCache
from gateway.worklist.item import WorklistItem
from gateway.worklist.matching import exact_patient_id
from gateway.worklist.mwl import MwlService
from tests.worklist.factory import mwl_dataset
from tests.worklist.test_mwl_statuses import FakeEvent

DAY = f"{datetime.date.today():%Y%m%d}"


@dataclass
class Context:
    transfer_syntax: UID


class SyntaxEvent(FakeEvent):
    """A C-FIND event on a presentation context with ``syntax``."""

    def __init__(self, identifier: Dataset, syntax: UID) -> None:
        super().__init__(identifier)
        self.context = Context(syntax)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[WorklistCache]:
    c = WorklistCache(tmp_path / "worklist.sqlite", SystemClock())
    c.open()
    yield c
    c.close()


def fill(cache: WorklistCache, *names: str) -> None:
    items = [
        WorklistItem.from_dataset(
            mwl_dataset(patient_name=name, accession_number=f"A{n}", start_date=DAY)
        )
        for n, name in enumerate(names)
    ]
    cache.replace(items, time.time())


def query(*, charset: str | None = "ISO_IR 100", with_step_id: bool = False) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = ""
    ds.AccessionNumber = ""
    step = Dataset()
    step.ScheduledProcedureStepStartDate = DAY
    if with_step_id:
        step.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def answer(service: MwlService, ds: Dataset, syntax: UID = ExplicitVRLittleEndian) -> list[Dataset]:
    out = []
    for status, identifier in service.handle_find(SyntaxEvent(ds, syntax)):
        if status == 0xFF00:
            assert isinstance(identifier, Dataset)
            out.append(identifier)
    return out


def names(found: list[Dataset]) -> list[str]:
    return sorted(str(ds.PatientName) for ds in found)


def test_a_repeated_query_is_answered_with_the_same_encoded_bytes(cache: WorklistCache) -> None:
    fill(cache, "Müller^Zoë", "Smith^John")
    service = MwlService(cache, None, 1.0, logging.getLogger("t"))
    first, again = answer(service, query()), answer(service, query())
    assert all(isinstance(ds, EncodedIdentifier) for ds in first + again)
    assert [ds.encoded_for(False, True, False) for ds in first] == [
        ds.encoded_for(False, True, False) for ds in again
    ]
    for ds in first:  # the bytes are pydicom's encoding of the answer they carry
        assert ds.encoded_for(False, True, False) == dsutils.encode(Dataset(ds), False, True)
    assert names(first) == ["Müller^Zoë", "Smith^John"]


def test_a_refreshed_item_is_answered_with_its_new_values(cache: WorklistCache) -> None:
    fill(cache, "Müller^Zoë")
    service = MwlService(cache, None, 1.0, logging.getLogger("t"))
    assert names(answer(service, query())) == ["Müller^Zoë"]
    fill(cache, "Moreau^Chloé")  # same accession and key, new name
    assert names(answer(service, query())) == ["Moreau^Chloé"]


def test_each_shape_character_set_and_syntax_gets_its_own_answer(cache: WorklistCache) -> None:
    fill(cache, "Müller^Zoë")
    service = MwlService(cache, None, 1.0, logging.getLogger("t"))
    (latin1,) = answer(service, query())
    (undeclared,) = answer(service, query(charset=None))
    (with_id,) = answer(service, query(with_step_id=True))
    (implicit,) = answer(service, query(), ImplicitVRLittleEndian)
    assert latin1.SpecificCharacterSet == "ISO_IR 100"
    assert undeclared.SpecificCharacterSet == "ISO_IR 192"
    assert "ScheduledProcedureStepID" not in latin1.ScheduledProcedureStepSequence[0]
    assert "ScheduledProcedureStepID" in with_id.ScheduledProcedureStepSequence[0]
    assert implicit.encoded_for(True, True, False) is not None
    assert implicit.encoded_for(False, True, False) is None
    assert str(implicit.PatientName) == str(latin1.PatientName) == "Müller^Zoë"


def test_without_a_presentation_context_the_answer_is_a_plain_dataset(
    cache: WorklistCache,
) -> None:
    fill(cache, "Smith^John")
    service = MwlService(cache, None, 1.0, logging.getLogger("t"))
    found = []
    for status, identifier in service.handle_find(FakeEvent(query())):
        if status == 0xFF00:
            found.append(identifier)
    assert len(found) == 1 and not isinstance(found[0], EncodedIdentifier)


def test_a_patient_id_query_answers_as_a_full_scan_would(cache: WorklistCache) -> None:
    items = [
        mwl_dataset(patient_id=pid, accession_number=acc, start_date=DAY)
        for pid, acc in (("P1", "A1"), ("P2", "A2"), ("P1", "A3"), ("p1", "A4"))
    ]
    cache.replace([WorklistItem.from_dataset(ds) for ds in items], time.time())
    service = MwlService(cache, None, 1.0, logging.getLogger("t"))

    def accessions(patient_id: str) -> list[str]:
        ds = query()
        ds.PatientID = patient_id
        return sorted(str(r.AccessionNumber) for r in answer(service, ds))

    assert exact_patient_id(query()) is None
    assert accessions("P1") == ["A1", "A3"]  # from the index; Patient ID is case-sensitive
    assert accessions(" P1 ") == ["A1", "A3"]
    assert accessions("P?") == ["A1", "A2", "A3"]  # wildcards scan
    assert accessions("P1\\P2") == ["A1", "A2", "A3"]  # a list scans
    assert accessions("P9") == []
