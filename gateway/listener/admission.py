"""Which unauthenticated connections the listener keeps: pure, the time passed in.

A connection is *pending* from TCP accept until it is handed to an association thread, or
closed. While pending it costs a socket and a little memory in the listener's single
pre-authentication thread, never a thread or an association slot. ``PendingTable`` decides, for
the accept loop, which pending connections stay. The rules:

* every pending connection must be done (TLS handshake, A-ASSOCIATE-RQ read and checked) by its
  deadline, ``handshake_timeout`` after accept; :meth:`PendingTable.expired` names those past it;
* at most ``per_address`` connections from one address are pending at once: a newcomer beyond
  that is refused at once. The newcomer, not the oldest, because the older ones have already
  cost a TLS handshake and the newcomer has cost nothing yet: a host that re-opens connections
  as fast as they are closed then makes the listener do no cryptography at all until its own
  connections time out. A modality needs one or two at a time, and a few more while retrying;
* at most ``max_pending`` connections are pending in all: a newcomer (from an address under its
  limit) then takes the place of one already pending, chosen in this order: a connection that is
  only being closed (:meth:`PendingTable.closing`, it has had its answer), the oldest one; else
  the oldest connection of the address with the most pending connections (of two such addresses,
  the one whose oldest is older). So a flood from a few addresses never pushes out a lone
  modality, and only a flood from more than ``max_pending`` addresses can evict it, and then only
  once it is the oldest of them all;
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


@dataclass(frozen=True)
class AdmissionLimits:
    """How many unauthenticated connections are kept: in all, and from one address."""

    max_pending: int = MAX_PENDING
    per_address: int = PER_ADDRESS

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.per_address < 1:
            raise ValueError("admission limits must be at least 1")


@dataclass(frozen=True)
class Admission(Generic[K]):
    """The verdict on a newcomer: kept or not, and the pending connection it displaces."""

    admitted: bool
    evicted: K | None = None


@dataclass
class _Record:
    address: str
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

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def count(self, address: str) -> int:
        """Pending connections from ``address``."""
        return self._per_address.get(address, 0)

    def admit(self, key: K, address: str, now: float) -> Admission[K]:
        """Decide on a newly accepted connection; if admitted it is pending from ``now``.

        An evicted connection is already forgotten here: the caller closes it.
        """
        if key in self._records:
            raise ValueError(f"{key!r} is already pending")
        if self.count(address) >= self.limits.per_address:
            return Admission(admitted=False)
        evicted = self._victim() if len(self._records) >= self.limits.max_pending else None
        if evicted is not None:
            self.remove(evicted)
        self._records[key] = _Record(address, since=now, deadline=now + self.deadline_seconds)
        self._per_address[address] = self.count(address) + 1
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
        left = self._per_address[record.address] - 1
        if left:
            self._per_address[record.address] = left
        else:
            del self._per_address[record.address]

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
        heaviest = max(self._per_address.values(), default=0)
        for key, record in self._records.items():  # the first found is its address's oldest
            if self._per_address[record.address] == heaviest:
                return key
        return None
