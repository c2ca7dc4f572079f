"""Presentation contexts are logged at DEBUG on both sides of a real association (issue 11, 15).

Our forwarder's Connector proposes Verification and CT Image Storage to our own listener, which
answers Verification only: one context accepted, one refused, each side logs both.
"""

from __future__ import annotations

import logging

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.forward.link import Connector, Link
from tests.forward.conftest import make_destination
from tests.listener.conftest import StartListener
from tests.listener.support import LISTENER_AE, listener_settings

VERIFICATION = "1.2.840.10008.1.1"
PAIRS = [(VERIFICATION, str(ImplicitVRLittleEndian)), (CTImageStorage, str(ExplicitVRLittleEndian))]


def _lines(caplog: pytest.LogCaptureFixture, side: str) -> list[dict[str, object]]:
    return [
        {"event": r.getMessage(), **vars(r)}
        for r in caplog.records
        if r.levelno == logging.DEBUG and getattr(r, "side", None) == side
    ]


def test_accepted_and_refused_contexts_are_logged_by_listener_and_forwarder(
    start_listener: StartListener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    listener = start_listener(listener_settings())
    destination = make_destination(listener.address[1], ae_title=LISTENER_AE)
    link = Connector(destination, "MODALITY", None).open(PAIRS)
    assert isinstance(link, Link), link
    link.release()

    for side in ("listener", "forwarder"):
        lines = {str(line["abstract_syntax"]).split()[0]: line for line in _lines(caplog, side)}
        assert set(lines) == {VERIFICATION, CTImageStorage}, side
        echo, ct = lines[VERIFICATION], lines[CTImageStorage]
        assert echo["event"] == "presentation_context_accepted"
        assert echo["transfer_syntax"] == ImplicitVRLittleEndian
        assert echo["abstract_syntax"] == f"{VERIFICATION} (Verification SOP Class)"
        assert ct["event"] == "presentation_context_rejected"
        assert ct["result"] == "abstract syntax not supported"
        assert ct["proposed_syntaxes"] == ExplicitVRLittleEndian
        assert (ct["calling_ae"], ct["called_ae"]) == ("MODALITY", LISTENER_AE)


def test_a_rejected_association_logs_what_was_proposed(
    start_listener: StartListener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    listener = start_listener(listener_settings(allowed_calling_ae_titles=["MODALITY_1"]))
    destination = make_destination(listener.address[1], ae_title=LISTENER_AE)
    outcome = Connector(destination, "STRANGER", None).open(PAIRS)
    assert not isinstance(outcome, Link)
    assert "calling AE title not recognised" in outcome.reason

    for side in ("listener", "forwarder"):
        lines = _lines(caplog, side)
        assert {line["event"] for line in lines} == {"presentation_context_proposed"}, side
        assert len(lines) == 2


def test_a_request_refused_for_want_of_a_slot_logs_what_was_proposed(
    start_listener: StartListener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    listener = start_listener(listener_settings(max_associations=1))
    destination = make_destination(listener.address[1], ae_title=LISTENER_AE)
    held = Connector(destination, "MODALITY_1", None).open(PAIRS)
    assert isinstance(held, Link), held
    try:
        outcome = Connector(destination, "MODALITY_2", None).open(PAIRS)
    finally:
        held.release()
    assert not isinstance(outcome, Link)
    assert "local limit exceeded" in outcome.reason.lower()

    proposed = [
        line
        for line in _lines(caplog, "listener")
        if line["event"] == "presentation_context_proposed"
    ]
    assert {str(line["abstract_syntax"]).split()[0] for line in proposed} == {
        VERIFICATION,
        CTImageStorage,
    }
    assert {(line["calling_ae"], line["called_ae"]) for line in proposed} == {
        ("MODALITY_2", LISTENER_AE)
    }


def test_nothing_is_built_above_debug(
    start_listener: StartListener, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    listener = start_listener(listener_settings())
    destination = make_destination(listener.address[1], ae_title=LISTENER_AE)
    link = Connector(destination, "MODALITY", None).open(PAIRS)
    assert isinstance(link, Link)
    link.release()
    assert not [r for r in caplog.records if r.getMessage().startswith("presentation_context")]
