"""Forged PDU lengths cost the listener nothing: refused from the header, memory stays flat.

pynetdicom 3.0.4 alone went from 49 MB to 850 MB on one forged 400 MiB A-ASSOCIATE-RQ. The
listener runs in a child process so that its own peak (VmHWM) can be read.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import suppress

import pytest

from tests.listener.support import (
    Child,
    association_rq,
    closed_by_peer,
    connect,
    pdu_header,
)

MIB = 1024 * 1024
# A safety bound, far under the 400 MiB declared: the listener may not buffer what it is sent.
GROWTH_LIMIT_KIB = 48 * 1024


@pytest.fixture
def child() -> Iterator[Child]:
    started = Child()
    yield started
    started.stop()


def _push(sock: socket.socket, total: int) -> None:
    """Send ``total`` zero bytes, stopping quietly when the listener has hung up."""
    chunk = bytes(MIB)
    sock.settimeout(10.0)
    try:
        for _ in range(total // MIB):
            sock.sendall(chunk)
    except OSError:
        return


def test_a_forged_400_mib_association_request_leaves_memory_flat(child: Child) -> None:
    assert child.ask("reset") == "OK"
    before = child.mem()
    with connect(child.port) as sock:
        sock.sendall(pdu_header(0x01, 400 * MIB))
        _push(sock, 64 * MIB)
        assert closed_by_peer(sock)
    after = child.mem()
    assert after["stats"]["refused_oversize"] == 1
    assert after["hwm_kib"] - before["rss_kib"] < GROWTH_LIMIT_KIB, (before, after)


def test_a_forged_huge_pdata_after_association_leaves_memory_flat(child: Child) -> None:
    with connect(child.port) as sock:
        sock.sendall(association_rq())
        header = sock.recv(6)
        assert header[:1] == b"\x02", header  # A-ASSOCIATE-AC
        assert child.ask("reset") == "OK"
        before = child.mem()
        sock.sendall(pdu_header(0x04, 400 * MIB))
        _push(sock, 64 * MIB)
        assert closed_by_peer(sock)
    after = child.mem()
    assert after["stats"]["refused_oversize"] == 1
    assert after["hwm_kib"] - before["rss_kib"] < GROWTH_LIMIT_KIB, (before, after)


def test_many_forged_requests_at_once_leave_memory_flat(child: Child) -> None:
    assert child.ask("reset") == "OK"
    before = child.mem()
    socks = [connect(child.port) for _ in range(6)]
    try:
        for sock in socks:
            # The listener may hang up before the whole MiB is sent: that is the point.
            with suppress(OSError):
                sock.sendall(pdu_header(0x01, 400 * MIB) + bytes(MIB))
        for sock in socks:
            assert closed_by_peer(sock)
    finally:
        for sock in socks:
            sock.close()
    after = child.mem()
    assert after["stats"]["refused_oversize"] + after["stats"]["refused_busy"] == 6
    assert after["hwm_kib"] - before["rss_kib"] < GROWTH_LIMIT_KIB, (before, after)
