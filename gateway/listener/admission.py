"""Which unauthenticated connections the listener keeps: pure, the time passed in.

A connection is *pending* from TCP accept until it is handed to an association thread, or
closed. While pending it costs a socket and a little memory in the listener's single
pre-authentication thread, never a thread or an association slot. ``PendingTable`` decides, for
the accept loop, which pending connections stay. The rules:

* every pending connection must be done (TLS handshake, A-ASSOCIATE-RQ read and checked) by its
  deadline, ``handshake_timeout`` after accept; :meth:`PendingTable.expired` names those past it;
* at most ``per_address`` connections from one address are pending at once, and at most
  ``per_network`` from one *group* of addresses (an IPv6 /64, as gateway.netaddr.address_key
  names it; for IPv4 the group is the address itself): a newcomer beyond either is refused at
  once. Two levels because one host may hold a whole /64 (privacy addresses) and take a fresh
  address per connection, while a hospital VLAN is often one /64 too: the exact address's limit
  keeps one flooding host from refusing a modality next to it, the looser group limit bounds a
  flood spread over the /64. The newcomer, not the oldest, because the older ones have already
  cost a TLS handshake and the newcomer has cost nothing yet: a host that re-opens connections
  as fast as they are closed then makes the listener do no cryptography at all until its own
  connections time out. A modality needs one or two at a time, and a few more while retrying;
* at most ``max_pending`` connections are pending in all: a newcomer (under its limits) then
  takes the place of one already pending, chosen in this order: a connection that is only being
  closed (:meth:`PendingTable.closing`, it has had its answer), the oldest one; else, in the
  group with the most pending connections, the oldest connection of its busiest address (of two
  such groups or addresses, the one whose oldest is older). So a flood from a few addresses or
  /64s never pushes out a lone modality, even one inside the flooding /64, and only a flood from
  more than ``max_pending`` groups can evict it, and then only once it is the oldest of them all;
* a closing connection keeps its place (it counts against its address) until its own, shorter,
  deadline: the time it gets to read our answer and hang up.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

MAX_PENDING = 256  # well under the 1024 descriptors a service gets by default
PER_ADDRESS = 16
PER_NETWORK = 4 * PER_ADDRESS  # an IPv6 /64: a VLAN of modalities, or one host's many addresses


@dataclass(frozen=True)
class AdmissionLimits:
    """How many unauthenticated connections are kept: in all, from one address, from one group."""

    max_pending: int = MAX_PENDING
    per_address: int = PER_ADDRESS
    per_network: int = PER_NETWORK

    def __post_init__(self) -> None:
        if min(self.max_pending, self.per_address, self.per_network) < 1:
            raise ValueError("admission limits must be at least 1")


@dataclass(frozen=True)
class Admission(Generic[K]):
    """The verdict on a newcomer: kept or not, and the pending connection it displaces."""

    admitted: bool
    evicted: K | None = None


@dataclass
class _Record:
    address: str
    group: str
    since: float  # accept time: the order of age
    deadline: float
    closing: bool = False


class PendingTable(Generic[K]):
    """The pending connections of one listener, keyed by whatever the caller uses."""

    def __init__(self, limits: AdmissionLimits, deadline_seconds: float) -> None:
        if deadline_seconds <= 0:
            raise ValueError("deadline_seconds must be positive")
        self.limits = limits
        self.deadline_seconds = deadline_seconds
        self._records: dict[K, _Record] = {}  # insertion order is accept order
        self._per_address: dict[str, int] = {}
        self._per_group: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def count(self, address: str) -> int:
        """Pending connections from ``address``."""
        return self._per_address.get(address, 0)

    def count_group(self, group: str) -> int:
        """Pending connections from the addresses of ``group``."""
        return self._per_group.get(group, 0)

    def admit(self, key: K, address: str, now: float, group: str | None = None) -> Admission[K]:
        """Decide on a newly accepted connection; if admitted it is pending from ``now``.

        ``group`` is the group ``address`` belongs to (its IPv6 /64); None: the address alone.
        An evicted connection is already forgotten here: the caller closes it.
        """
        if key in self._records:
            raise ValueError(f"{key!r} is already pending")
        group = address if group is None else group
        if (
            self.count(address) >= self.limits.per_address
            or self.count_group(group) >= self.limits.per_network
        ):
            return Admission(admitted=False)
        evicted = self._victim() if len(self._records) >= self.limits.max_pending else None
        if evicted is not None:
            self.remove(evicted)
        self._records[key] = _Record(
            address, group, since=now, deadline=now + self.deadline_seconds
        )
        _add(self._per_address, address, 1)
        _add(self._per_group, group, 1)
        return Admission(admitted=True, evicted=evicted)

    def closing(self, key: K, until: float) -> None:
        """``key`` has had its answer and is being closed; it goes by ``until`` at the latest."""
        record = self._records.get(key)
        if record is not None:
            record.closing = True
            record.deadline = min(record.deadline, until)

    def is_closing(self, key: K) -> bool:
        """Whether :meth:`closing` was called for ``key``."""
        record = self._records.get(key)
        return record is not None and record.closing

    def remove(self, key: K) -> None:
        """``key`` is no longer pending (handed on, refused, gone); unknown keys are ignored."""
        record = self._records.pop(key, None)
        if record is None:
            return
        _add(self._per_address, record.address, -1)
        _add(self._per_group, record.group, -1)

    def expired(self, now: float) -> list[K]:
        """Pending connections whose deadline has passed, oldest first (still pending)."""
        return [key for key, record in self._records.items() if record.deadline <= now]

    def next_deadline(self) -> float | None:
        """The earliest deadline of any pending connection; None when there is none."""
        return min((r.deadline for r in self._records.values()), default=None)

    def _victim(self) -> K | None:
        for key, record in self._records.items():  # oldest first
            if record.closing:
                return key
        heaviest = max(self._per_group.values(), default=0)
        busiest = max(
            (
                self._per_address[r.address]
                for r in self._records.values()
                if self._per_group[r.group] == heaviest
            ),
            default=0,
        )
        for key, record in self._records.items():  # the first found is its address's oldest
            if (
                self._per_group[record.group] == heaviest
                and self._per_address[record.address] == busiest
            ):
                return key
        return None


def _add(counts: dict[str, int], name: str, step: int) -> None:
    """Add ``step`` to ``counts[name]``; a count that drops to zero is forgotten."""
    left = counts.get(name, 0) + step
    if left:
        counts[name] = left
    else:
        del counts[name]
