"""The admission rules alone: deadlines, the per-address limit, eviction when full."""

from __future__ import annotations

import pytest

from gateway.listener.admission import Admission, AdmissionLimits, PendingTable
from gateway.netaddr import address_key, host_address


def _table(
    max_pending: int = 8, per_address: int = 3, deadline: float = 10.0, per_network: int = 12
) -> PendingTable[str]:
    limits = AdmissionLimits(
        max_pending=max_pending, per_address=per_address, per_network=per_network
    )
    return PendingTable(limits, deadline)


def test_a_connection_is_pending_until_its_deadline() -> None:
    table = _table(deadline=10.0)
    assert table.admit("a", "10.0.0.1", now=100.0) == Admission(admitted=True)
    assert table.next_deadline() == 110.0
    assert table.expired(109.9) == []
    assert table.expired(110.0) == ["a"]
    assert "a" in table  # expired names it; the caller closes it and removes it
    table.remove("a")
    assert len(table) == 0
    assert table.next_deadline() is None


def test_expired_lists_the_oldest_first() -> None:
    table = _table()
    for index, key in enumerate(("a", "b", "c")):
        table.admit(key, f"10.0.0.{index}", now=float(index))
    assert table.expired(100.0) == ["a", "b", "c"]


def test_a_newcomer_over_its_address_limit_is_refused_and_the_others_stay() -> None:
    table = _table(per_address=2)
    table.admit("a", "10.0.0.1", now=0.0)
    table.admit("b", "10.0.0.1", now=1.0)
    assert table.admit("c", "10.0.0.1", now=2.0) == Admission(admitted=False)
    assert "c" not in table
    assert table.count("10.0.0.1") == 2
    assert table.admit("d", "10.0.0.2", now=3.0).admitted  # another address is not affected


def test_an_address_gets_its_room_back_when_one_of_its_connections_goes() -> None:
    table = _table(per_address=1)
    table.admit("a", "10.0.0.1", now=0.0)
    table.remove("a")
    assert table.count("10.0.0.1") == 0
    assert table.admit("b", "10.0.0.1", now=1.0).admitted


def test_when_full_the_oldest_of_the_busiest_address_makes_room() -> None:
    table = _table(max_pending=4, per_address=3)
    table.admit("lone", "10.0.0.9", now=0.0)  # the oldest of all, but alone at its address
    table.admit("flood-1", "10.0.0.1", now=1.0)
    table.admit("flood-2", "10.0.0.1", now=2.0)
    table.admit("other", "10.0.0.2", now=3.0)
    verdict = table.admit("new", "10.0.0.3", now=4.0)
    assert verdict == Admission(admitted=True, evicted="flood-1")
    assert "lone" in table and "flood-1" not in table
    assert table.count("10.0.0.1") == 1
    assert len(table) == 4


def test_of_two_equally_busy_addresses_the_one_with_the_older_connection_gives_way() -> None:
    table = _table(max_pending=4, per_address=3)
    table.admit("b-1", "10.0.0.2", now=0.0)
    table.admit("a-1", "10.0.0.1", now=1.0)
    table.admit("a-2", "10.0.0.1", now=2.0)
    table.admit("b-2", "10.0.0.2", now=3.0)
    assert table.admit("new", "10.0.0.3", now=4.0).evicted == "b-1"


def test_when_every_address_has_one_the_oldest_gives_way() -> None:
    table = _table(max_pending=3, per_address=3)
    for index in range(3):
        table.admit(f"c{index}", f"10.0.0.{index}", now=float(index))
    assert table.admit("new", "10.0.1.1", now=5.0).evicted == "c0"


def test_a_closing_connection_gives_way_before_any_other() -> None:
    table = _table(max_pending=3, per_address=3)
    table.admit("flood-1", "10.0.0.1", now=0.0)
    table.admit("flood-2", "10.0.0.1", now=1.0)
    table.admit("answered", "10.0.0.2", now=2.0)
    table.closing("answered", until=3.0)
    assert table.is_closing("answered")
    assert table.admit("new", "10.0.0.3", now=2.5).evicted == "answered"


def test_closing_shortens_the_deadline_and_never_lengthens_it() -> None:
    table = _table(deadline=10.0)
    table.admit("a", "10.0.0.1", now=0.0)
    table.closing("a", until=1.0)
    assert table.next_deadline() == 1.0
    table.admit("b", "10.0.0.2", now=5.0)
    table.closing("b", until=50.0)
    assert table.expired(15.0) == ["a", "b"]


def test_a_closing_connection_still_counts_against_its_address() -> None:
    table = _table(per_address=1)
    table.admit("a", "10.0.0.1", now=0.0)
    table.closing("a", until=1.0)
    assert not table.admit("b", "10.0.0.1", now=0.5).admitted


def test_a_key_cannot_be_admitted_twice_and_unknown_keys_are_ignored() -> None:
    table = _table()
    table.admit("a", "10.0.0.1", now=0.0)
    with pytest.raises(ValueError, match="already pending"):
        table.admit("a", "10.0.0.1", now=1.0)
    table.remove("nobody")
    table.closing("nobody", until=1.0)
    assert not table.is_closing("nobody")
    assert len(table) == 1


@pytest.mark.parametrize(
    ("max_pending", "per_address", "per_network"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)]
)
def test_limits_below_one_are_refused(max_pending: int, per_address: int, per_network: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionLimits(max_pending=max_pending, per_address=per_address, per_network=per_network)


def _admit(table: PendingTable[str], key: str, host: str, now: float) -> Admission[str]:
    """Admit as the gate does: the exact address, grouped by its /64 (gateway.netaddr)."""
    return table.admit(key, host_address(host), now, group=address_key(host))


def test_a_modality_in_the_64_of_a_flooding_host_is_still_admitted() -> None:
    # A hospital VLAN is often one /64: a host over its own limit there refuses only itself.
    table = _table(max_pending=64, per_address=16, per_network=64)
    for index in range(16):
        assert _admit(table, f"flood-{index}", "2001:db8:1:2::66", now=float(index)).admitted
    assert not _admit(table, "flood-16", "2001:db8:1:2::66", now=16.0).admitted
    assert not _admit(table, "flood-17", "2001:db8:1:2::66%eth0", now=16.0).admitted  # the same
    assert _admit(table, "modality", "2001:db8:1:2::104", now=17.0).admitted
    assert table.count(host_address("2001:db8:1:2::66")) == 16
    assert table.count_group(address_key("2001:db8:1:2::104")) == 17


def test_a_flood_spread_over_one_64_is_bounded_by_the_64_limit() -> None:
    # One host holding a whole /64 takes a fresh address per connection: the group limit holds.
    table = _table(max_pending=256, per_address=16, per_network=64)
    admitted = sum(
        _admit(table, f"flood-{index}", f"2001:db8:1:2::{index + 1:x}", now=float(index)).admitted
        for index in range(200)
    )
    assert admitted == 64
    assert table.count_group(address_key("2001:db8:1:2::1")) == 64
    assert _admit(table, "elsewhere", "2001:db8:1:3::1", now=300.0).admitted  # another /64


def test_when_full_a_lone_modality_in_the_flooding_64_is_not_the_one_evicted() -> None:
    table = _table(max_pending=4, per_address=3, per_network=8)
    _admit(table, "modality", "2001:db8:1:2::104", now=0.0)  # the oldest of all
    _admit(table, "flood-1", "2001:db8:1:2::66", now=1.0)
    _admit(table, "flood-2", "2001:db8:1:2::66", now=2.0)
    _admit(table, "other", "10.0.0.2", now=3.0)
    assert _admit(table, "new", "10.0.0.3", now=4.0).evicted == "flood-1"


def test_one_host_on_either_kind_of_socket_is_one_address() -> None:
    table = _table(per_address=1)
    assert _admit(table, "e", "::ffff:10.0.0.5", now=3.0).admitted
    assert not _admit(table, "f", "10.0.0.5", now=4.0).admitted  # the same host
    assert _admit(table, "g", "10.0.0.6", now=4.0).admitted  # IPv4: each address its own group
