"""gateway.web.admission: which connections the panel keeps (pure: no sockets, time passed in)."""

from __future__ import annotations

from gateway.web.admission import ConnectionTable, DoorLimits, Phase

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


def test_a_request_body_has_a_deadline_from_its_last_byte() -> None:
    table = ConnectionTable(DoorLimits(body_seconds=30.0))
    conn = _admit(table, "10.0.0.1", 0.0)
    table.enter(conn, Phase.WAITING, 1.0)
    assert table.enter(conn, Phase.BODY, 2.0) == 30.0
    table.received(conn, 20.0)  # a byte of the body: a large upload lives as long as it sends
    assert not table.overdue(conn, 49.9)
    assert table.remaining(conn, 40.0) == 10.0
    assert table.overdue(conn, 50.0)  # 30 s without a byte: a stalled body is closed


def test_stalled_bodies_give_way_to_a_newcomer_the_longest_silent_first() -> None:
    table = ConnectionTable(DoorLimits(total=3, per_address=3))
    silent = _admit(table, "10.0.0.9", 0.0)
    sending = _admit(table, "10.0.0.9", 0.0)
    answered = _admit(table, "10.0.0.9", 0.0)
    for conn in (silent, sending):
        table.enter(conn, Phase.BODY, 1.0)
    table.received(sending, 5.0)
    table.enter(answered, Phase.REQUEST, 1.0)
    admission = table.admit("10.0.0.1", 6.0)
    assert admission.conn is not None and admission.evict == (silent,)
    admission = table.admit("10.0.0.2", 7.0)
    assert admission.conn is not None and admission.evict == (sending,)
    assert table.phase(answered) is Phase.REQUEST


def test_a_body_trickled_a_byte_a_millisecond_ranks_by_its_headers_not_its_last_byte() -> None:
    # Review of issue 11: ranked by its last byte, a trickling body was always the youngest, and
    # a newcomer still in its TLS handshake was evicted before it.
    table = ConnectionTable(DoorLimits(total=2, per_address=2))
    trickle = _admit(table, "10.0.0.9", 0.0)
    table.enter(trickle, Phase.BODY, 1.0)
    newcomer = _admit(table, "10.0.0.1", 2.0)
    for ms in range(3000, 4000):
        table.received(trickle, ms / 1000)
    admission = table.admit("10.0.0.2", 4.0)
    assert admission.conn is not None and admission.evict == (trickle,)
    assert table.phase(newcomer) is Phase.HANDSHAKE


def test_a_body_has_an_overall_deadline_from_the_end_of_its_headers() -> None:
    table = ConnectionTable(DoorLimits(body_seconds=30.0, body_total_seconds=60.0))
    conn = _admit(table, "10.0.0.1", 0.0)
    assert table.enter(conn, Phase.BODY, 10.0) == 30.0
    for second in range(11, 70):  # a byte a second: never silent for 30 s
        table.received(conn, float(second))
        assert table.overdue(conn, float(second)) == (second >= 70)
    assert table.remaining(conn, 60.0) == 10.0  # the whole-body limit, not 30 s from the byte
    assert table.overdue(conn, 70.0)
