"""The PDU framing rules alone: header checks, PDV accounting, deadlines on reads."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time

import pytest

from gateway.forward.tlsctx import server_context
from gateway.listener.guard import (
    ASSOCIATION_PDU_LIMIT,
    MessageBudget,
    PduLimits,
    PeerRefusedError,
    check_header,
    command_field,
    read_exact,
)
from tests.conftest import Pki
from tests.listener.support import pdu_header, server_tls

LIMITS = PduLimits(max_pdata=16384)


def _pdv(control: int, data: bytes, context_id: int = 1) -> bytes:
    return struct.pack(">LBB", len(data) + 2, context_id, control) + data


def _command(field: int) -> bytes:
    return struct.pack("<HHLH", 0x0000, 0x0100, 2, field)


def test_a_pdata_up_to_the_negotiated_maximum_is_accepted() -> None:
    assert check_header(pdu_header(0x04, 16384), LIMITS) == (0x04, 16384)


def test_a_pdata_over_the_negotiated_maximum_is_refused() -> None:
    with pytest.raises(PeerRefusedError) as caught:
        check_header(pdu_header(0x04, 1 << 20), LIMITS)
    assert caught.value.kind == "oversize"


def test_an_association_request_over_its_cap_is_refused() -> None:
    check_header(pdu_header(0x01, ASSOCIATION_PDU_LIMIT), LIMITS, first=True)
    with pytest.raises(PeerRefusedError) as caught:
        check_header(pdu_header(0x01, 400 * 1024 * 1024), LIMITS, first=True)
    assert caught.value.kind == "oversize"


@pytest.mark.parametrize("pdu_type", [0x00, 0x08, 0xFF])
def test_unknown_pdu_types_are_malformed(pdu_type: int) -> None:
    with pytest.raises(PeerRefusedError) as caught:
        check_header(pdu_header(pdu_type, 4), LIMITS)
    assert caught.value.kind == "malformed"


def test_the_first_pdu_must_be_an_association_request() -> None:
    with pytest.raises(PeerRefusedError) as caught:
        check_header(pdu_header(0x05, 4), LIMITS, first=True)
    assert caught.value.kind == "malformed"


def test_command_field_is_read_from_an_implicit_little_endian_command_set() -> None:
    other = struct.pack("<HHL", 0x0000, 0x0002, 4) + b"1.2\x00"
    assert command_field(other + _command(0x0001)) == 0x0001
    assert command_field(other) is None


def test_a_command_set_over_its_limit_is_refused() -> None:
    budget = MessageBudget(PduLimits(max_pdata=16384, command=1024))
    budget.feed(_pdv(0x01, bytes(1000)))
    with pytest.raises(PeerRefusedError) as caught:
        budget.feed(_pdv(0x01, bytes(100)))
    assert caught.value.kind == "oversize"


def test_an_in_memory_data_set_over_its_limit_is_refused() -> None:
    budget = MessageBudget(PduLimits(max_pdata=16384, dataset_in_memory=4096))
    budget.feed(_pdv(0x03, _command(0x0020)))  # C-FIND-RQ: its identifier is kept in memory
    budget.feed(_pdv(0x00, bytes(4000)))
    with pytest.raises(PeerRefusedError):
        budget.feed(_pdv(0x00, bytes(200)))


def test_a_c_store_data_set_streamed_to_disk_is_not_bounded_here() -> None:
    budget = MessageBudget(PduLimits(max_pdata=16384, dataset_in_memory=4096))
    budget.feed(_pdv(0x03, _command(0x0001)))
    for _ in range(10):
        budget.feed(_pdv(0x00, bytes(4000)))
    budget.feed(_pdv(0x02, b""))


def test_each_message_gets_a_fresh_data_set_budget() -> None:
    budget = MessageBudget(PduLimits(max_pdata=16384, dataset_in_memory=4096))
    for _ in range(3):
        budget.feed(_pdv(0x03, _command(0x0020)))
        budget.feed(_pdv(0x02, bytes(4000)))


def test_a_pdv_item_reaching_outside_its_pdu_is_malformed() -> None:
    with pytest.raises(PeerRefusedError) as caught:
        MessageBudget(LIMITS).feed(struct.pack(">LBB", 100, 1, 0) + bytes(10))
    assert caught.value.kind == "malformed"


def test_read_exact_drops_a_trickling_peer_at_the_deadline() -> None:
    ours, theirs = socket.socketpair()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            try:
                theirs.send(b"x")
            except OSError:
                return
            stop.wait(0.05)

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        with pytest.raises(PeerRefusedError) as caught:
            read_exact(ours, 1000, time.monotonic() + 0.5)
        assert caught.value.kind == "timeout"
    finally:
        stop.set()
        thread.join()
        ours.close()
        theirs.close()


def test_read_exact_reports_a_peer_that_hangs_up() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b"abc")
    theirs.close()
    with pytest.raises(PeerRefusedError) as caught:
        read_exact(ours, 10, time.monotonic() + 5)
    assert caught.value.kind == "closed"
    ours.close()


def test_server_context_requires_a_verified_client_certificate(pki: Pki) -> None:
    context = server_context(server_tls(pki))
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    tls12 = [s for s in context.get_ciphers() if s["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(s["aead"] and s["kea"] in ("kx-ecdhe", "kx-dhe") for s in tls12)
