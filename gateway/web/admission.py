"""Which connections the panel keeps, and for how long: the rules of its door.

A hostile or broken neighbour must not close the panel by opening connections and doing nothing
with them. Each connection is in one phase; the phase says how long it may stay there and whether
it may be closed to make room for another (pure: the caller passes the time and does the I/O,
gateway.web.door):

=========  ===================================================  =====================  =========
phase      from → to                                            deadline               evictable
=========  ===================================================  =====================  =========
HANDSHAKE  accepted → TLS up                                    ``handshake_seconds``  yes
WAITING    TLS up, or the last response sent → a request's      ``request_seconds``    yes
           headers complete
REQUEST    headers complete → response sent                     none (the app answers) no
=========  ===================================================  =====================  =========

A connection past its phase's deadline is closed. The deadline of WAITING counts from the start
of the phase, not from the last byte, so a client trickling a header a byte at a time is closed
as surely as one that sends nothing (the server's keep-alive timeout closes quiet ones sooner).

Limits, checked when a connection is accepted, before its TLS handshake:

1. At most ``per_address`` connections from one address (an IPv6 /64 counts as one address:
   a host has a whole one). Over it, the address's own oldest evictable connection is closed.
2. At most ``total`` connections in all. Over it, the oldest evictable connection of the address
   holding the most connections is closed: a newcomer is let in at the expense of whoever holds
   the most, not of a browser that has one.
3. When nothing may be evicted (every connection is in REQUEST), the new connection is refused.

"Oldest" is the longest in its phase. A connection in REQUEST is never evicted: it is being
answered. Nobody is answered 503: a legitimate browser whose idle keep-alive connection was
closed opens a new one.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where a connection is in its life (see the module's table)."""

    HANDSHAKE = "handshake"
    WAITING = "waiting"
    REQUEST = "request"


EVICTABLE = frozenset({Phase.HANDSHAKE, Phase.WAITING})


@dataclass(frozen=True)
class DoorLimits:
    """How many connections, and how long before a request (see the module docstring)."""

    total: int = 64  # a panel has a few users; each browser opens up to 6
    per_address: int = 16
    handshake_seconds: float = 10.0  # a TLS handshake takes milliseconds on a hospital LAN
    request_seconds: float = 10.0  # to send a complete request's headers

    def deadline(self, phase: Phase) -> float | None:
        """Seconds a connection may stay in ``phase``; None: no limit."""
        if phase is Phase.HANDSHAKE:
            return self.handshake_seconds
        if phase is Phase.WAITING:
            return self.request_seconds
        return None


@dataclass(frozen=True)
class Admission:
    """The answer to a new connection: its id (None: refused) and the ids to close for it."""

    conn: int | None
    evict: tuple[int, ...] = ()

    @property
    def crowded(self) -> bool:
        """True when a limit was reached: something was evicted or the newcomer refused."""
        return self.conn is None or bool(self.evict)


@dataclass
class _Entry:
    address: str
    phase: Phase
    since: float


def address_key(host: str) -> str:
    """The address a limit counts by: IPv4 as is (also when IPv4-mapped), IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an IP address (a Unix socket, a test): count it by what it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConnectionTable:
    """The connections the panel holds, by id; decides admissions, evictions and deadlines."""

    def __init__(self, limits: DoorLimits) -> None:
        self.limits = limits
        self._entries: dict[int, _Entry] = {}
        self._per_address: dict[str, int] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, address: str) -> int:
        """Connections held from ``address`` (already an address_key)."""
        return self._per_address.get(address, 0)

    def admit(self, host: str, now: float) -> Admission:
        """A connection from ``host`` was accepted: let it in (in HANDSHAKE), evicting if
        a limit requires, or refuse it. Evicted connections are forgotten here at once."""
        address = address_key(host)
        evict: list[int] = []
        if self.count(address) >= self.limits.per_address:
            victim = self._oldest_evictable(lambda entry: entry.address == address)
            if victim is None:
                return Admission(None)
            evict.append(victim)
            self.release(victim)
        if len(self._entries) >= self.limits.total:
            victim = self._victim_for_total()
            if victim is None:
                return Admission(None, tuple(evict))
            evict.append(victim)
            self.release(victim)
        conn = next(self._ids)
        self._entries[conn] = _Entry(address, Phase.HANDSHAKE, now)
        self._per_address[address] = self.count(address) + 1
        return Admission(conn, tuple(evict))

    def enter(self, conn: int, phase: Phase, now: float) -> float | None:
        """``conn`` moved to ``phase`` (no-op when already there or gone): the seconds until
        its deadline, None when it has none (or is no longer held)."""
        entry = self._entries.get(conn)
        if entry is None:
            return None
        if entry.phase is not phase:
            entry.phase = phase
            entry.since = now
        deadline = self.limits.deadline(phase)
        return None if deadline is None else max(entry.since + deadline - now, 0.0)

    def phase(self, conn: int) -> Phase | None:
        """The phase of ``conn``, or None when it is not held."""
        entry = self._entries.get(conn)
        return None if entry is None else entry.phase

    def overdue(self, conn: int, now: float) -> bool:
        """True when ``conn`` has stayed in its phase past the phase's deadline."""
        entry = self._entries.get(conn)
        if entry is None:
            return False
        deadline = self.limits.deadline(entry.phase)
        return deadline is not None and now >= entry.since + deadline

    def release(self, conn: int) -> None:
        """``conn`` is closed (or about to be): forget it. Idempotent."""
        entry = self._entries.pop(conn, None)
        if entry is None:
            return
        left = self._per_address[entry.address] - 1
        if left:
            self._per_address[entry.address] = left
        else:
            del self._per_address[entry.address]

    def _victim_for_total(self) -> int | None:
        candidates = [
            (-self._per_address[entry.address], entry.since, conn)
            for conn, entry in self._entries.items()
            if entry.phase in EVICTABLE
        ]
        return min(candidates)[2] if candidates else None

    def _oldest_evictable(self, wanted: Callable[[_Entry], bool]) -> int | None:
        candidates = [
            (entry.since, conn)
            for conn, entry in self._entries.items()
            if entry.phase in EVICTABLE and wanted(entry)
        ]
        return min(candidates)[1] if candidates else None
