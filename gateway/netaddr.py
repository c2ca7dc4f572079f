"""What counts as one address for a per-address limit: one definition for every door.

The web panel's door (gateway.web.admission) and the DICOM listener's front door
(gateway.listener.gate) limit connections per address by :func:`address_key`; if they keyed
differently, a host could get more from one than from another. The password throttle
(gateway.web.auth.throttle) keys by :func:`host_address` instead, the exact address: one host's
wrong passwords must not make its /64 neighbours wait (its account-wide budget bounds a guesser
rotating addresses inside a /64). Rules of :func:`address_key`:

1. IPv4: the address as is.
2. IPv4-mapped IPv6 (``::ffff:10.0.0.5``, what a dual-stack socket reports for an IPv4 peer):
   the IPv4 address, so one host is one address on either kind of socket.
3. Other IPv6: its /64 network, because a host commonly holds a whole /64 (SLAAC privacy
   addresses, RFC 8981) and could otherwise take a fresh address per connection. A zone index
   (``fe80::1%eth0``) is dropped.
4. Anything else (a Unix socket, a test's made-up peer): the text as is.

:func:`host_address` is the exact address under the same rules 1, 2 and 4 (IPv6 in its canonical
text, zone dropped): the DICOM front door limits per exact address and, looser, per
:func:`address_key` group, so that one host of a /64 cannot refuse its neighbours there.
"""

from __future__ import annotations

import ipaddress


def host_address(host: str) -> str:
    """The exact address of ``host``, one text per host (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def address_key(host: str) -> str:
    """The address a limit counts ``host`` by (see the module docstring)."""
    exact = host_address(host)
    try:
        ip = ipaddress.ip_address(exact)
    except ValueError:
        return exact
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return exact
