"""Before it has asked well a caller holds no association slot; a refused caller gets its answer.

Issue 11 items 1 and 2: association slots used to be taken at TCP accept, so idle sockets and
malformed A-ASSOCIATE-RQs closed the port to everyone (a malformed one for ``acse_timeout``
after its caller had gone).
"""

from __future__ import annotations

import struct

from pynetdicom import AE

from tests.harness import wait_until
from tests.listener.conftest import StartListener
from tests.listener.support import (
    LISTENER_AE,
    association_rq,
    connect,
    echoscu,
    listener_settings,
    pdu_header,
    reply,
)

# A-ABORT, source 2 (service-provider), reason 6 (invalid PDU parameter value): PS3.8 9.3.8.
A_ABORT = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06))
# The header says A-ASSOCIATE-RQ; the body is not one (no AE titles, no items).
MALFORMED_RQ = pdu_header(0x01, 68) + bytes(68)


def test_malformed_requests_whose_callers_hang_up_leave_every_slot_free(
    start_listener: StartListener,
) -> None:
    # As in the issue: 8 requests in well under a second, each connection then closed.
    listener = start_listener(listener_settings(max_associations=4, acse_timeout=30.0))
    for _ in range(8):
        with connect(listener.address[1]) as sock:
            sock.sendall(MALFORMED_RQ)
    result = echoscu(listener.address[1])  # at once: not "local limit exceeded"
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait_until(lambda: listener.stats()["refused_malformed"] == 8)
    assert wait_until(lambda: listener.stats()["active"] == 0)  # the echo's thread ends


def test_a_malformed_request_is_answered_with_an_abort_before_the_close(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings())
    with connect(listener.address[1]) as sock:
        sock.sendall(MALFORMED_RQ)
        assert reply(sock) == A_ABORT
    assert listener.stats()["refused_malformed"] == 1


def test_an_oversize_request_is_answered_with_an_abort_before_the_close(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings())
    with connect(listener.address[1]) as sock:
        sock.sendall(pdu_header(0x01, 400 * 1024 * 1024))
        assert reply(sock) == A_ABORT
    assert listener.stats()["refused_oversize"] == 1


def test_an_oversize_pdata_in_an_association_is_answered_with_an_abort_before_the_close(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(max_pdu=16384))
    with connect(listener.address[1]) as sock:
        sock.sendall(association_rq())
        header = sock.recv(6)
        assert header[:1] == b"\x02", header  # A-ASSOCIATE-AC
        (length,) = struct.unpack(">L", header[2:])
        sock.settimeout(10.0)
        accept = b""
        while len(accept) < length:
            accept += sock.recv(length - len(accept))
        sock.sendall(pdu_header(0x04, 64 * 1024 * 1024) + bytes(4096))
        assert reply(sock) == A_ABORT
    assert wait_until(lambda: listener.stats()["refused_oversize"] == 1)


def test_a_first_pdu_that_is_an_abort_is_not_answered(start_listener: StartListener) -> None:
    listener = start_listener(listener_settings())
    with connect(listener.address[1]) as sock:
        sock.sendall(A_ABORT)
        assert reply(sock) == b""
    assert wait_until(lambda: listener.stats()["refused_malformed"] == 1)


def test_a_request_without_presentation_contexts_is_malformed(
    start_listener: StartListener,
) -> None:
    request = association_rq()
    # Keep the fixed part and the application context item only (PS3.8 9.3.2).
    fixed = request[6:74]
    (context_length,) = struct.unpack(">H", request[76:78])
    body = fixed + request[74 : 78 + context_length]
    listener = start_listener(listener_settings())
    with connect(listener.address[1]) as sock:
        sock.sendall(pdu_header(0x01, len(body)) + body)
        assert reply(sock) == A_ABORT
    assert listener.stats()["refused_malformed"] == 1
    assert echoscu(listener.address[1]).returncode == 0


def test_an_unknown_calling_ae_title_is_rejected_without_taking_a_slot(
    start_listener: StartListener,
) -> None:
    settings = listener_settings(max_associations=1, allowed_calling_ae_titles=["US_ROOM_1"])
    listener = start_listener(settings)
    ae = AE(ae_title="US_ROOM_1")
    ae.add_requested_context("1.2.840.10008.1.1")
    holder = ae.associate("127.0.0.1", listener.address[1], ae_title=LISTENER_AE)
    try:
        assert holder.is_established  # the only slot is taken
        refused = echoscu(listener.address[1], calling="INTRUDER")
        assert refused.returncode != 0
        # The answer the caller can act on, not "local limit exceeded".
        assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
        assert listener.stats()["refused_busy"] == 0
        assert wait_until(lambda: listener.stats()["rejected"] == 1)
    finally:
        holder.release()


def test_a_caller_that_vanishes_mid_association_frees_its_slot_at_once(
    start_listener: StartListener,
) -> None:
    # network_timeout is long: only noticing the end of file frees the slot within the wait.
    listener = start_listener(listener_settings(max_associations=1, network_timeout=60.0))
    with connect(listener.address[1]) as sock:
        sock.sendall(association_rq())
        assert sock.recv(1) == b"\x02"  # A-ASSOCIATE-AC: the slot is taken
        assert listener.stats()["active"] == 1
    assert wait_until(lambda: listener.stats()["active"] == 0, timeout=5.0)
    result = echoscu(listener.address[1])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_caller_that_hangs_up_before_asking_is_forgotten_at_once(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(handshake_timeout=60.0))
    request = association_rq()
    with connect(listener.address[1]) as sock:
        sock.sendall(request[:20])
        assert wait_until(lambda: listener.pending() == 1)
    assert wait_until(lambda: listener.pending() == 0, timeout=5.0)
    assert listener.stats()["timed_out"] == 0
