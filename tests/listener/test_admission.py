"""The admission rules alone: deadlines, the per-address limit, eviction when full."""

from __future__ import annotations

import pytest

from gateway.listener.admission import Admission, AdmissionLimits, PendingTable
from gateway.netaddr import address_key


def _table(max_pending: int = 8, per_address: int = 3, deadline: float = 10.0) -> PendingTable[str]:
    return PendingTable(AdmissionLimits(max_pending=max_pending, per_address=per_address), deadline)


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


@pytest.mark.parametrize(("max_pending", "per_address"), [(0, 1), (1, 0)])
def test_limits_below_one_are_refused(max_pending: int, per_address: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AdmissionLimits(max_pending=max_pending, per_address=per_address)


def test_two_addresses_of_one_ipv6_64_share_the_per_address_limit() -> None:
    # The gate keys the table by gateway.netaddr.address_key, as the web door does: a host
    # holding a whole /64 cannot take a fresh address per connection to pass the limit.
    table = _table(per_address=1)
    assert table.admit("a", address_key("2001:db8:1:2::1"), now=0.0).admitted
    assert not table.admit("b", address_key("2001:db8:1:2:ffff::2"), now=1.0).admitted
    assert not table.admit("c", address_key("2001:db8:1:2::1%eth0"), now=1.0).admitted
    assert table.admit("d", address_key("2001:db8:1:3::1"), now=2.0).admitted  # another /64
    assert table.admit("e", address_key("::ffff:10.0.0.5"), now=3.0).admitted
    assert not table.admit("f", address_key("10.0.0.5"), now=4.0).admitted  # the same host
