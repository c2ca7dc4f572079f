"""gateway.netaddr: what one address is for the connection limits (web door, DICOM listener)
and for the password throttle (the exact address)."""

from __future__ import annotations

import pytest

from gateway.netaddr import address_key, host_address
from gateway.web import admission


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_ipv4(host: str, key: str) -> None:
    assert address_key(host) == key


def test_the_web_door_uses_the_one_definition() -> None:
    assert admission.address_key is address_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:0:0:1", "2001:db8:1:2:aaaa::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", "unknown"),
    ],
)
def test_the_throttles_address_is_exact_written_one_way(host: str, key: str) -> None:
    assert host_address(host) == key
