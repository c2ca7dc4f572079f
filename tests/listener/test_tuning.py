"""The C-FIND shortcuts of gateway.listener.tuning change no byte a modality receives."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, dsutils, evt, service_class
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from gateway.clock import SystemClock
from gateway.listener import tuning
from gateway.listener.services import UNCOMPRESSED_SYNTAXES, ListenerService
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import MODALITY_WORKLIST_FIND
from gateway.worklist.item import WorklistItem
from gateway.worklist.mwl import MwlService
from tests.listener.conftest import StartListener
from tests.listener.support import listener_settings
from tests.worklist.factory import mwl_dataset
from tests.worklist.mwlpeers import findscu

TODAY = f"{datetime.date.today():%Y%m%d}"


def identifier() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Zoë"
    ds.PatientID = "P1"
    ds.PatientBirthDate = ""
    step = Dataset()
    step.Modality = "US"
    step.ScheduledProcedureStepStartDate = TODAY
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


ENCODINGS = [(True, True), (False, True), (False, False)]


def test_an_encoded_identifier_reads_back_as_the_dataset_it_was_encoded_from() -> None:
    ds = identifier()
    for implicit, little in ENCODINGS:
        encoded = dsutils.encode(ds, implicit, little)
        assert encoded
        known = tuning.EncodedIdentifier(encoded, implicit, little)
        assert known == ds
        assert known.PatientName == "Müller^Zoë"
        assert known.encoded_for(implicit, little, False) == encoded
        assert known.encoded_for(implicit, little, True) is None


def test_the_encode_shortcut_gives_what_pynetdicom_would_encode() -> None:
    ds = identifier()
    known = tuning.EncodedIdentifier(dsutils.encode(ds, True, True) or b"", True, True)
    for implicit, little in ENCODINGS:
        expected = dsutils.encode(ds, implicit, little)
        assert tuning._encode_known(known, implicit, little) == expected
        assert tuning._encode_known(ds, implicit, little) == expected
    deflated = tuning._encode_known(known, False, True, True)
    assert deflated == dsutils.encode(ds, False, True, True)


def test_the_shortcuts_are_for_the_pinned_pynetdicom_and_install_idempotently() -> None:
    assert tuning.SUPPORTED  # pyproject pins pynetdicom <3.1; a new minor needs a fresh look
    assert tuning.install() and tuning.install()
    assert tuning.installed()
    assert service_class.encode is tuning._encode_known  # type: ignore[attr-defined]


def acceptor(max_pdu: int) -> Association:
    """An acceptor association that never runs: what its DIMSE provider sends stays queued."""
    ae = AE()
    assoc = Association(ae, MODE_ACCEPTOR)
    assoc.requestor.maximum_length = max_pdu
    return assoc


def find_response(status: int, identifier: bytes | None, comment: str | None = None) -> C_FIND:
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = ModalityWorklistInformationFind
    rsp.Status = status
    rsp.Identifier = BytesIO(identifier) if identifier is not None else None
    if comment is not None:
        rsp.ErrorComment = comment
    return rsp


def sent(assoc: Association) -> list[bytes]:
    """The encoded P-DATA-TF PDUs queued for the peer."""
    out = []
    queue = assoc.dul.to_provider_queue
    while not queue.empty():
        pdu = P_DATA_TF()
        pdu.from_primitive(queue.get())
        out.append(bytes(pdu.encode()))
    return out


def responses() -> Iterator[Any]:
    big = dsutils.encode(identifier(), False, True) or b""
    yield find_response(0xFF00, big)
    yield find_response(0xFF00, big + b"")  # the same command set again, from the memo
    yield find_response(0xFF01, big)
    yield find_response(0xA900, None, "not MWL")
    yield find_response(0x0000, None)
    store = C_STORE()
    store.MessageIDBeingRespondedTo = 3
    store.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    store.AffectedSOPInstanceUID = "1.2.3.4"
    store.Status = 0x0000
    yield store


@pytest.mark.parametrize("max_pdu", [0, 16384, 40])
def test_find_responses_go_out_as_the_same_pdus_as_from_pynetdicom(max_pdu: int) -> None:
    stock, tuned = acceptor(max_pdu), acceptor(max_pdu)
    tuning.tune_association(tuned)
    assert isinstance(tuned.dimse, tuning.FindResponseDimse)
    for rsp_stock, rsp_tuned in zip(responses(), responses(), strict=True):
        DIMSEServiceProvider.send_msg(stock.dimse, rsp_stock, 1)
        tuned.dimse.send_msg(rsp_tuned, 1)
        assert sent(tuned) == sent(stock)


def test_a_handler_on_dimse_sent_still_gets_every_message() -> None:
    assoc = acceptor(16384)
    tuning.tune_association(assoc)
    seen: list[str] = []
    assoc.bind(evt.EVT_DIMSE_SENT, lambda event: seen.append(type(event.message).__name__))
    assoc.dimse.send_msg(find_response(0xFF00, b"\x08\x00\x50\x00\x00\x00\x00\x00"), 1)
    assert seen == ["C_FIND_RSP"]
    assert len(sent(assoc)) == 2


# -- end to end: DCMTK findscu against the listener ------------------------------------------


@pytest.fixture
def mwl(tmp_path: Path) -> Iterator[MwlService]:
    cache = WorklistCache(tmp_path / "worklist.sqlite", SystemClock())
    cache.open()
    people = [("Müller^Zoë", "A1"), ("Smith^John", "A2"), ("Grüß^Ωmega", "A3")]
    items = [
        WorklistItem.from_dataset(
            mwl_dataset(
                patient_name=name,
                patient_id=f"P{n}",
                accession_number=acc,
                step_id=f"S{n}",
                start_date=TODAY,
            )
        )
        for n, (name, acc) in enumerate(people)
    ]
    cache.replace(items, time.time())
    yield MwlService(cache, None, 1.0, logging.getLogger("test.mwl"))
    cache.close()


KEYS = [
    "SpecificCharacterSet=ISO_IR 100",
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "ScheduledProcedureStepSequence[0].Modality=US",
    f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={TODAY}",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
]


def answers(port: int, out: Path, extra: list[str]) -> list[bytes]:
    found, _ = findscu(port, KEYS, out, extra=extra)
    return sorted(dsutils.encode(ds, False, True) or b"" for ds in found)


@pytest.mark.peers
@pytest.mark.parametrize("syntax", [[], ["-xi"], ["-xb"]])
def test_findscu_receives_the_same_answers_with_and_without_the_shortcuts(
    tmp_path: Path,
    start_listener: StartListener,
    mwl: MwlService,
    monkeypatch: pytest.MonkeyPatch,
    syntax: list[str],
) -> None:
    service = ListenerService(
        "mwl",
        (MODALITY_WORKLIST_FIND,),
        UNCOMPRESSED_SYNTAXES,
        ((evt.EVT_C_FIND, mwl.handle_find),),
    )
    fast = start_listener(listener_settings(), services=[service])
    first = answers(fast.address[1], tmp_path / "first", syntax)  # builds and encodes
    again = answers(fast.address[1], tmp_path / "again", syntax)  # from the encoded answers
    monkeypatch.setattr(service_class, "encode", dsutils.encode)
    monkeypatch.setattr(tuning, "install", lambda: False)
    monkeypatch.setattr(tuning, "tune_association", lambda assoc: None)
    plain = start_listener(listener_settings(), services=[service])
    stock = answers(plain.address[1], tmp_path / "stock", syntax)
    assert len(first) == 3
    assert first == again == stock
