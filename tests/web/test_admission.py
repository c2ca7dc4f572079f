"""gateway.web.admission: which connections the panel keeps (pure: no sockets, time passed in)."""

from __future__ import annotations

import pytest

from gateway.web.admission import ConnectionTable, DoorLimits, Phase, address_key

LIMITS = DoorLimits(total=6, per_address=3, handshake_seconds=10.0, request_seconds=5.0)


def _admit(table: ConnectionTable, host: str, now: float) -> int:
    admission = table.admit(host, now)
    assert admission.conn is not None and not admission.evict
    return admission.conn


def test_a_connection_starts_in_handshake_with_its_deadline_then_waits_for_a_request() -> None:
    table = ConnectionTable(LIMITS)
    conn = _admit(table, "10.0.0.1", 100.0)
    assert table.phase(conn) is Phase.HANDSHAKE
    assert not table.overdue(conn, 109.9)
    assert table.overdue(conn, 110.0)
    assert table.enter(conn, Phase.WAITING, 101.0) == 5.0
    assert not table.overdue(conn, 105.9)
    assert table.overdue(conn, 106.0)


def test_the_request_deadline_counts_from_the_start_of_waiting_not_from_the_last_byte() -> None:
    table = ConnectionTable(LIMITS)
    conn = _admit(table, "10.0.0.1", 0.0)
    table.enter(conn, Phase.WAITING, 1.0)
    # Re-entering the same phase (a byte of a header trickled in) does not move the deadline.
    assert table.enter(conn, Phase.WAITING, 4.0) == 2.0
    assert table.overdue(conn, 6.0)


def test_a_request_being_answered_has_no_deadline_and_is_never_evicted() -> None:
    table = ConnectionTable(DoorLimits(total=2, per_address=2))
    first = _admit(table, "10.0.0.1", 0.0)
    second = _admit(table, "10.0.0.1", 0.0)
    assert table.enter(first, Phase.REQUEST, 1.0) is None
    assert table.enter(second, Phase.REQUEST, 1.0) is None
    assert not table.overdue(first, 10_000.0)
    refused = table.admit("10.0.0.2", 2.0)
    assert refused.conn is None and refused.crowded
    assert len(table) == 2


def test_over_the_per_address_limit_the_addresses_own_oldest_idle_connection_goes() -> None:
    table = ConnectionTable(LIMITS)
    a1 = _admit(table, "10.0.0.1", 0.0)
    a2 = _admit(table, "10.0.0.1", 1.0)
    a3 = _admit(table, "10.0.0.1", 2.0)
    other = _admit(table, "10.0.0.2", 0.5)
    table.enter(a1, Phase.REQUEST, 3.0)  # busy: kept
    table.enter(a2, Phase.WAITING, 3.5)  # idle since 3.5: newer than a3's handshake (2.0)
    admission = table.admit("10.0.0.1", 4.0)
    assert admission.conn is not None
    assert admission.evict == (a3,)
    assert table.phase(a3) is None and table.phase(other) is Phase.HANDSHAKE
    assert table.count("10.0.0.1") == 3


def test_when_full_the_address_holding_most_gives_way_to_a_newcomer() -> None:
    table = ConnectionTable(LIMITS)
    hog = [_admit(table, "10.0.0.9", float(t)) for t in range(3)]
    calm = [_admit(table, f"10.0.0.{n}", 0.0 - n) for n in (1, 2, 3)]  # older, one each
    admission = table.admit("10.0.0.4", 10.0)
    assert admission.conn is not None and admission.crowded
    assert admission.evict == (hog[0],)  # the hog's oldest, not the older single ones
    assert all(table.phase(conn) is Phase.HANDSHAKE for conn in calm)
    assert len(table) == 6


def test_release_is_idempotent_and_frees_the_address() -> None:
    table = ConnectionTable(LIMITS)
    conn = _admit(table, "10.0.0.1", 0.0)
    table.release(conn)
    table.release(conn)
    assert len(table) == 0 and table.count("10.0.0.1") == 0
    assert table.enter(conn, Phase.WAITING, 1.0) is None
    assert not table.overdue(conn, 100.0)


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_ipv4(host: str, key: str) -> None:
    assert address_key(host) == key
