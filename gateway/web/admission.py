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
BODY       headers complete → the request's body complete       ``body_seconds``       yes
                                                                without a byte, and
                                                                ``body_total_seconds``
                                                                from the headers
REQUEST    body complete → response sent                        none (the app answers) no
=========  ===================================================  =====================  =========

A connection past its phase's deadline is closed. The deadline of WAITING counts from the start
of the phase, not from the last byte, so a client trickling a header a byte at a time is closed
as surely as one that sends nothing (the server's keep-alive timeout closes quiet ones sooner).
BODY has two deadlines: ``body_seconds`` without a byte (:meth:`ConnectionTable.received`), so
a request that announced a body and stopped sending it is closed, and ``body_total_seconds``
from the end of the headers, so a body trickled a byte at a time is closed too. No request body
is larger than 256 KiB (app.py's BodyLimit: a configuration file or a certificate chain, pasted
or uploaded; the panel takes no release bundle), which a link of 35 kbit/s sends in 60 s.
Without the first, 64 connections each sending ``POST /login`` with ``Content-Length: 1000000``
and two bytes of body held every place in the door for ever, and nobody could log in or read
``/healthz``; without the second, one byte a second did the same.

Limits, checked when a connection is accepted, before its TLS handshake:

1. At most ``per_address`` connections from one address (as gateway.netaddr counts them: an
   IPv6 /64 is one address, a host has a whole one). Over it, the address's own oldest
   evictable connection is closed.
2. At most ``total`` connections in all. Over it, the oldest evictable connection of the address
   holding the most connections is closed: a newcomer is let in at the expense of whoever holds
   the most, not of a browser that has one.
3. When nothing may be evicted (every connection is in REQUEST), the new connection is refused.

"Oldest" is the longest in its phase, for BODY the longest since its headers ended (not since
its last byte: a connection trickling one byte a millisecond would otherwise always rank
youngest, and a newcomer still in its TLS handshake would go before it).

A connection in REQUEST is never evicted and has no deadline from the door: the app is
answering it, and the app's own work (an argon2 hash, a support bundle) takes what it takes. A
client can hold a connection there only as long as the app takes to answer it, not by sending or
not sending anything (a client that does not read a large answer is the one case: the
per-address limit bounds those, and the answers that large are behind a login). Nobody is
answered 503: a legitimate browser whose idle keep-alive connection was closed opens a new one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.netaddr import address_key

__all__ = ["EVICTABLE", "Admission", "ConnectionTable", "DoorLimits", "Phase", "address_key"]


class Phase(StrEnum):
    """Where a connection is in its life (see the module's table)."""

    HANDSHAKE = "handshake"
    WAITING = "waiting"
    BODY = "body"
    REQUEST = "request"


EVICTABLE = frozenset({Phase.HANDSHAKE, Phase.WAITING, Phase.BODY})


@dataclass(frozen=True)
class DoorLimits:
    """How many connections, and how long before a request (see the module docstring)."""

    total: int = 64  # a panel has a few users; each browser opens up to 6
    per_address: int = 16
    handshake_seconds: float = 10.0  # a TLS handshake takes milliseconds on a hospital LAN
    request_seconds: float = 10.0  # to send a complete request's headers
    body_seconds: float = 30.0  # without a byte of a request's body (a slow link stalls seconds)
    body_total_seconds: float = 60.0  # for a whole body (at most 256 KiB: app.MAX_BODY_BYTES)

    def deadline(self, phase: Phase) -> float | None:
        """Seconds a connection may stay in ``phase`` (BODY: without a byte; its whole-body
        limit is ``body_total_seconds``); None: no limit."""
        if phase is Phase.HANDSHAKE:
            return self.handshake_seconds
        if phase is Phase.WAITING:
            return self.request_seconds
        if phase is Phase.BODY:
            return self.body_seconds
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
    since: float  # when it entered its phase: deadlines and eviction rank count from here
    last_byte: float  # BODY only: when a byte of the body last came (the silence deadline)


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
        self._entries[conn] = _Entry(address, Phase.HANDSHAKE, now, now)
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
            entry.since = entry.last_byte = now
        return self.remaining(conn, now)

    def received(self, conn: int, now: float) -> None:
        """A byte of ``conn``'s request body arrived at ``now``: its silence deadline starts
        again; its whole-body deadline and its rank for eviction do not (no-op in any other
        phase: there the deadline counts from the start of the phase)."""
        entry = self._entries.get(conn)
        if entry is not None and entry.phase is Phase.BODY:
            entry.last_byte = now

    def remaining(self, conn: int, now: float) -> float | None:
        """Seconds until ``conn``'s deadline (0 when past it); None: no deadline, or not held."""
        entry = self._entries.get(conn)
        if entry is None:
            return None
        deadline = self.limits.deadline(entry.phase)
        if deadline is None:
            return None
        if entry.phase is Phase.BODY:
            end = min(entry.last_byte + deadline, entry.since + self.limits.body_total_seconds)
        else:
            end = entry.since + deadline
        return max(end - now, 0.0)

    def phase(self, conn: int) -> Phase | None:
        """The phase of ``conn``, or None when it is not held."""
        entry = self._entries.get(conn)
        return None if entry is None else entry.phase

    def overdue(self, conn: int, now: float) -> bool:
        """True when ``conn`` is past its phase's deadline (BODY: silent too long, or the
        whole body too long)."""
        return self.remaining(conn, now) == 0.0

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
