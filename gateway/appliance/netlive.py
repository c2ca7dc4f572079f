"""What the network is doing now, read from /proc and systemd's state files under /run.

No netlink and no D-Bus: the daemon runs without AF_NETLINK (its unit's RestrictAddressFamilies)
and without a bus policy, so everything comes from files any user may read, under a root that
tests replace by a fake one. Parsers are pure (text in, data out); :func:`read_live` does the
reading and a file that is missing or unreadable counts as "nothing known", never an error:

* addresses: ``/proc/net/fib_trie`` (IPv4: an address line ``|-- a.b.c.d`` followed by
  ``/32 host LOCAL``) and ``/proc/net/if_inet6`` (IPv6, with the link name);
* default routes: ``/proc/net/route`` (destination 0, gateway in little-endian hex) and
  ``/proc/net/ipv6_route``;
* DNS: ``/run/systemd/resolve/resolv.conf`` (what systemd-resolved uses upstream);
* DHCP leases: ``DHCP4_ADDRESS=`` of systemd-networkd's ``/run/systemd/netif/links/<ifindex>``;
* time: ``/run/systemd/timesync/synchronized`` exists once systemd-timesyncd has synced (its
  runtime folder ``/run/systemd/timesync`` exists while it runs); :func:`clock_sync` decides
  what the panel says about the clock.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TIMESYNC_DIR = Path("/run/systemd/timesync")
SYNCED_FILE = TIMESYNC_DIR / "synchronized"
ClockState = Literal["synced", "unsynced", "unknown"]
UNSYNCED_TEXT = (
    "The clock is not synchronised: times on this box (DICOM dates, the log, certificate "
    "checks) come from its last saved time until an NTP server answers. "
    "Check the NTP servers under Network & time."
)


@dataclass(frozen=True)
class ClockSync:
    """What the panel says about the clock: ``state`` for the API, ``message`` for people
    ("" when there is nothing to say)."""

    state: ClockState
    message: str


def clock_sync(*, synchronized: bool, timesyncd_runs: bool, appliance: bool) -> ClockSync:
    """The clock's state, by these rules:

    1. ``synced`` once systemd-timesyncd has synchronised the clock in this boot;
    2. ``unsynced`` before that, when timesyncd runs or the box is an appliance (whose only
       time source is timesyncd: a Pi has no battery-backed clock, and a timesyncd that does
       not run is a reason more to say so);
    3. ``unknown`` otherwise: a box whose operating system keeps time its own way (chrony,
       ntpd) that the gateway cannot see; the panel then says nothing.
    """
    if synchronized:
        return ClockSync("synced", "")
    if timesyncd_runs or appliance:
        return ClockSync("unsynced", UNSYNCED_TEXT)
    return ClockSync("unknown", "")


def read_clock_sync(root: Path, *, appliance: bool) -> ClockSync:
    """:func:`clock_sync` from timesyncd's files under ``root``."""
    return clock_sync(
        synchronized=(root / SYNCED_FILE.relative_to("/")).exists(),
        timesyncd_runs=(root / TIMESYNC_DIR.relative_to("/")).is_dir(),
        appliance=appliance,
    )


@dataclass(frozen=True)
class LiveNetwork:
    """The box's network as it is now."""

    hostname: str = ""
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[tuple[str, str], ...] = ()  # (link, address), link-local included
    default_routes: tuple[str, ...] = ()  # "192.0.2.1 via eth0"
    dns: tuple[str, ...] = ()
    dhcp_addresses: frozenset[str] = field(default_factory=frozenset)
    ntp_synced: bool = False

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address of the box, loopback left out: what a browser could connect to."""
        v4 = [a for a in self.ipv4 if not ipaddress.ip_address(a).is_loopback]
        v6 = [a for _, a in self.ipv6 if not ipaddress.ip_address(a).is_loopback]
        return tuple(v4 + v6)


def parse_fib_trie(text: str) -> set[IpAddress]:
    """The local IPv4 addresses in /proc/net/fib_trie (loopback included)."""
    found: set[IpAddress] = set()
    for previous, line in itertools.pairwise(text.splitlines()):
        if "/32 host LOCAL" in line and "|--" in previous:
            try:
                found.add(ipaddress.ip_address(previous.split("|--")[1].strip()))
            except ValueError:
                continue
    return found


def parse_if_inet6(text: str) -> list[tuple[str, ipaddress.IPv6Address]]:
    """(link, address) of each line of /proc/net/if_inet6."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or len(parts[0]) != 32:
            continue
        try:
            out.append((parts[5], ipaddress.IPv6Address(bytes.fromhex(parts[0]))))
        except ValueError:
            continue
    return out


def parse_route(text: str) -> list[str]:
    """IPv4 default routes of /proc/net/route, as "gateway via link"."""
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 3 or parts[1] != "00000000":
            continue
        try:
            gateway = ipaddress.IPv4Address(bytes.fromhex(parts[2])[::-1])
        except ValueError:
            continue
        out.append(f"{gateway} via {parts[0]}")
    return out


def parse_ipv6_route(text: str) -> list[str]:
    """IPv6 default routes of /proc/net/ipv6_route (::/0 with a next hop)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10 or parts[0] != "0" * 32 or parts[1] != "00":
            continue
        try:
            hop = ipaddress.IPv6Address(bytes.fromhex(parts[4]))
        except ValueError:
            continue
        if not hop.is_unspecified:
            out.append(f"{hop} via {parts[9]}")
    return out


def parse_resolv_conf(text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append(parts[1])
    return out


def parse_link_state(text: str) -> str | None:
    """``DHCP4_ADDRESS`` of one systemd-networkd link state file, if it has a lease."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "DHCP4_ADDRESS" and value.strip():
            try:
                return str(ipaddress.ip_address(value.strip()))
            except ValueError:
                return None
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def dhcp_addresses(root: Path) -> frozenset[str]:
    """The addresses DHCP leases gave the box now (systemd-networkd's link state files)."""
    links = root / "run/systemd/netif/links"
    try:
        files = sorted(p for p in links.iterdir() if p.is_file())
    except OSError:
        return frozenset()
    found = (parse_link_state(_read(p)) for p in files)
    return frozenset(a for a in found if a is not None)


def local_ipv4(root: Path) -> set[IpAddress]:
    """The box's IPv4 addresses (loopback included)."""
    return parse_fib_trie(_read(root / "proc/net/fib_trie"))


def local_ipv6(root: Path) -> list[tuple[str, ipaddress.IPv6Address]]:
    """The box's IPv6 addresses with their links."""
    return parse_if_inet6(_read(root / "proc/net/if_inet6"))


def read_live(root: Path) -> LiveNetwork:
    """The network now, from the files under ``root`` (``/`` on the box)."""
    return LiveNetwork(
        hostname=_read(root / "proc/sys/kernel/hostname").strip(),
        ipv4=tuple(sorted(str(a) for a in local_ipv4(root))),
        ipv6=tuple((link, str(a)) for link, a in local_ipv6(root)),
        default_routes=tuple(
            parse_route(_read(root / "proc/net/route"))
            + parse_ipv6_route(_read(root / "proc/net/ipv6_route"))
        ),
        dns=tuple(parse_resolv_conf(_read(root / "run/systemd/resolve/resolv.conf"))),
        dhcp_addresses=dhcp_addresses(root),
        ntp_synced=(root / SYNCED_FILE.relative_to("/")).exists(),
    )
