"""Hostile peers cannot block, exhaust or bloat the listener; legitimate callers still get in."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from gateway.forward.tlsctx import server_context
from gateway.listener.admission import AdmissionLimits
from tests.conftest import Pki
from tests.harness import wait_until
from tests.listener.conftest import StartListener
from tests.listener.support import (
    LISTENER_AE,
    association_rq,
    closed_by_peer,
    connect,
    echoscu,
    listener_settings,
    pdu_header,
    server_tls,
)


def test_idle_connections_on_the_tls_port_do_not_block_a_legitimate_caller(
    start_listener: StartListener, pki: Pki
) -> None:
    settings = listener_settings(handshake_timeout=30.0, max_associations=2)
    listener = start_listener(settings, ssl_context=server_context(server_tls(pki)))
    idle = [connect(listener.address[1]) for _ in range(3)]  # more than there are slots
    try:
        assert wait_until(lambda: listener.pending() == 3)
        assert listener.stats()["active"] == 0  # before TLS a caller holds no slot
        result = echoscu(listener.address[1], tls=(pki.ca, pki.pacs.cert, pki.pacs.key))
        assert result.returncode == 0, result.stdout + result.stderr
        # The idle peers are still connected: they were not dropped to make room.
        assert listener.stats()["timed_out"] == 0
        assert listener.pending() == 3
    finally:
        for sock in idle:
            sock.close()


def test_a_peer_that_says_nothing_is_dropped_after_the_handshake_timeout(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(handshake_timeout=0.5))
    with connect(listener.address[1]) as sock:
        assert closed_by_peer(sock)
    assert wait_until(lambda: listener.stats()["timed_out"] == 1)


def test_a_slowloris_trickling_its_association_request_is_dropped(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(handshake_timeout=1.0))
    request = association_rq()
    dropped = False
    with connect(listener.address[1]) as sock:
        for byte in request:  # one byte every 100 ms: each read is quick, the whole is not
            try:
                sock.sendall(bytes((byte,)))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            time.sleep(0.1)
        else:
            dropped = closed_by_peer(sock, timeout=5.0)
    assert dropped
    assert wait_until(lambda: listener.stats()["timed_out"] == 1)


def test_an_oversize_association_request_is_refused_before_it_is_read(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings())
    with connect(listener.address[1]) as sock:
        sock.sendall(pdu_header(0x01, 400 * 1024 * 1024))
        assert closed_by_peer(sock)
    assert wait_until(lambda: listener.stats()["refused_oversize"] == 1)


def test_a_first_pdu_that_is_not_an_association_request_is_refused(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings())
    with connect(listener.address[1]) as sock:
        sock.sendall(pdu_header(0x04, 16) + bytes(16))
        assert closed_by_peer(sock)
    assert wait_until(lambda: listener.stats()["refused_malformed"] == 1)


def test_an_oversize_pdata_in_an_established_association_aborts_it(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(max_pdu=16384))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", listener.address[1], ae_title=LISTENER_AE)
    assert assoc.is_established
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    try:
        raw.sendall(pdu_header(0x04, 64 * 1024 * 1024) + bytes(4096))
        assert wait_until(lambda: listener.stats()["refused_oversize"] == 1)
        assert wait_until(lambda: not assoc.is_established)
    finally:
        assoc.abort()
        raw.close()  # pynetdicom skips close() when shutdown() fails on a dead peer


def _associate(port: int, calling: str = "MODALITY") -> Association:
    """An established pynetdicom association (Verification) to the listener."""
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    assert assoc.is_established
    return assoc


def test_excess_associations_are_refused_and_served_once_capacity_frees(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(max_associations=2, network_timeout=30.0))
    holders = [_associate(listener.address[1]) for _ in range(2)]
    try:
        assert wait_until(lambda: listener.stats()["active"] == 2)
        for expected in (1, 2, 3):  # every request over the limit is told so, none is cut off
            refused = echoscu(listener.address[1])
            assert refused.returncode != 0
            assert "Local Limit Exceeded" in refused.stdout + refused.stderr
            assert wait_until(lambda n=expected: listener.stats()["refused_busy"] == n)
    finally:
        for assoc in holders:
            assoc.release()
    assert wait_until(lambda: listener.stats()["active"] == 0)
    served = echoscu(listener.address[1])
    assert served.returncode == 0, served.stdout + served.stderr


def test_a_caller_over_its_address_limit_of_pending_connections_is_closed_at_once(
    start_listener: StartListener, caplog: pytest.LogCaptureFixture
) -> None:
    listener = start_listener(
        listener_settings(handshake_timeout=30.0),
        admission=AdmissionLimits(max_pending=64, per_address=3),
    )
    holders = [connect(listener.address[1]) for _ in range(3)]
    try:
        assert wait_until(lambda: listener.pending() == 3)
        for _ in range(3):
            with connect(listener.address[1]) as extra:
                assert closed_by_peer(extra)
        assert listener.stats()["refused_crowded"] == 3
        assert listener.pending() == 3  # those already waiting keep their place
        # A flood is logged as a rate: one WARNING, the repeats at DEBUG.
        crowded = [r for r in caplog.records if getattr(r, "kind", None) == "crowded"]
        assert [r.levelno for r in crowded] == [logging.WARNING]
    finally:
        for sock in holders:
            sock.close()
    # A caller that hangs up is forgotten at once, not at its deadline.
    assert wait_until(lambda: listener.pending() == 0)
    assert listener.stats()["timed_out"] == 0


def test_an_unknown_calling_ae_title_is_rejected_with_that_reason(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(allowed_calling_ae_titles=["US_ROOM_1"]))
    refused = echoscu(listener.address[1], calling="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    assert wait_until(lambda: listener.stats()["rejected"] == 1)
    allowed = echoscu(listener.address[1], calling="US_ROOM_1")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_stop_ends_handshakes_and_associations_and_joins_their_threads(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings(handshake_timeout=60.0, network_timeout=60.0))
    idle = connect(listener.address[1])
    assoc = _associate(listener.address[1])
    try:
        assert wait_until(lambda: listener.stats()["active"] == 1 and listener.pending() == 1)
        listener.stop()
        names = [t.name for t in threading.enumerate()]
        assert not [n for n in names if n.startswith("listener-")], names
        assert closed_by_peer(idle)
        assert wait_until(lambda: not assoc.is_established)
    finally:
        idle.close()
        assoc.abort()


def test_a_peer_that_resets_mid_request_leaves_the_listener_serving(
    start_listener: StartListener,
) -> None:
    listener = start_listener(listener_settings())
    request = association_rq()
    sock = connect(listener.address[1])
    sock.sendall(request[: len(request) // 2])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST
    assert wait_until(lambda: listener.stats()["active"] == 0)
    result = echoscu(listener.address[1])
    assert result.returncode == 0, result.stdout + result.stderr
