"""Password throttling: how often a password may be tried, per address and per account.

Every password check goes through here: the login, the first-run setup token, and the current
password asked on /account. With F = ``login_max_failures`` and L = ``lockout_seconds``, and an
address as gateway.netaddr counts it (an IPv6 /64 is one address):

1. **Address**: at most ``ADDRESS_FACTOR`` × F wrong passwords (any user names, unknown ones
   included) from one address within L. At that many the address waits until the oldest of them
   is L old. A right password takes none of them back, so a guesser who also holds an account of
   their own cannot wipe the count by logging in with it between guesses.
2. **Account from an address**: F wrong passwords in a row for one account from one address
   lock that account *from that address* for L. A right password from there for that account, or
   an engineer's *Unlock*, starts the count again.
3. **Account under attack, per address**: after F wrong passwords in a row for one account, from
   any addresses, each address waits ``ACCOUNT_DELAY`` seconds after *its own* last try for that
   account before its next one, until a right password (or L without a wrong one). The delay
   is not shared: when it was counted from the last try by anyone, a guesser polling every
   0.1 s took every slot and the engineer's tries from their own desk were all refused (0 of 60
   in an hour).

The guarantee: no try from one address ever delays or refuses a try from another (rules 1-3 all
count per address, or per account from an address), so the engineer at an address of their own
gets in at their first try with the right password, whatever a neighbour does; browsers
behind one address (a NAT, a proxy) share its waits. The price: nothing bounds guesses at one
account summed over many addresses other than F per L per address; the password rule (length,
the common passwords refused) and argon2 are the defence against a guesser with very many
addresses, and every wrong one is logged and audited.

A check is counted as wrong from the moment it is allowed (:meth:`Throttle.begin`) until it
turns out right (:meth:`Throttle.succeeded`), so requests sent in parallel get no more tries than
the rules allow. While any rule holds, even the right password is refused, with the wait.

Pure and time passed in (:class:`Throttle`); :class:`LoginThrottle` adds the clock and a lock
for the panel's worker threads. Kept in memory, at most ``MAX_REMEMBERED`` addresses, pairs and
accounts each; beyond that the least recently failed entry *that holds no wait* is forgotten
first, so a guesser with many addresses cannot flush a lock away by failing elsewhere. Only when
every entry of a table holds a wait is the least recently failed of them forgotten (memory stays
bounded; it takes that many locked addresses). A restart lifts every wait.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from gateway.clock import Clock
from gateway.netaddr import address_key

ADDRESS_FACTOR = 3
ACCOUNT_DELAY = 10.0  # seconds between one address's tries for an account under attack (rule 3)
MAX_REMEMBERED = 4096


class Rule(StrEnum):
    """Which rule makes a try wait."""

    ADDRESS = "address"
    ACCOUNT_FROM_ADDRESS = "account from this address"
    ACCOUNT = "account under attack"


@dataclass(frozen=True)
class Verdict:
    """Whether a password may be tried now; if not, for how long and by which rule."""

    wait: float | None = None  # seconds; None: go ahead
    rule: Rule | None = None

    @property
    def allowed(self) -> bool:
        """True when the password may be checked now."""
        return self.wait is None


@dataclass
class _Run:
    """Wrong passwords in a row and when the last one was."""

    failures: int = 0
    last: float = 0.0


@dataclass
class _Address:
    failures: deque[float] = field(default_factory=deque)  # times of the wrong ones, oldest first


class Throttle:
    """The rules of the module docstring, with ``now`` passed in (no clock, no lock)."""

    def __init__(self, max_failures: int, lockout_seconds: float) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.address_limit = max_failures * ADDRESS_FACTOR
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._pairs: OrderedDict[tuple[str, str], _Run] = OrderedDict()
        self._accounts: OrderedDict[str, _Run] = OrderedDict()

    def check(self, account: str, address: str, now: float) -> Verdict:
        """May a password for ``account`` from ``address`` be tried now? (Counts nothing.)"""
        address = address_key(address)
        waits: list[tuple[float, Rule]] = []
        failures = self._recent(address, now, create=False)
        if len(failures) >= self.address_limit:
            waits.append((failures[-self.address_limit] + self.lockout_seconds - now, Rule.ADDRESS))
        pair = self._pairs.get((account, address))
        if pair is not None and pair.failures >= self.max_failures:
            if now < pair.last + self.lockout_seconds:
                waits.append((pair.last + self.lockout_seconds - now, Rule.ACCOUNT_FROM_ADDRESS))
            else:
                del self._pairs[(account, address)]  # the lock is over: a fresh count
                pair = None
        attacked = self._under_attack(account, now)
        if pair is not None and attacked and now < pair.last + ACCOUNT_DELAY:
            waits.append((pair.last + ACCOUNT_DELAY - now, Rule.ACCOUNT))
        if not waits:
            return Verdict()
        wait, rule = max(waits)
        return Verdict(wait, rule)

    def begin(self, account: str, address: str, now: float) -> Verdict:
        """Check, and when allowed count the try as wrong until :meth:`succeeded` says not."""
        verdict = self.check(account, address, now)
        if not verdict.allowed:
            return verdict
        address = address_key(address)
        self._recent(address, now, create=True).append(now)
        _remember(self._addresses, address, lambda state: self._address_held(state, now))
        pair = _run(self._pairs, (account, address), lambda run: self._pair_held(run, now))
        run = _run(self._accounts, account, lambda run: self._account_held(run, now))
        for counted in (pair, run):
            counted.failures += 1
            counted.last = now
        return verdict

    def succeeded(self, account: str, address: str, now: float) -> None:
        """The password begun at ``now`` was right: take back that one try, and start the
        account's counts (rules 2 and 3) again. The address keeps its other wrong ones."""
        address = address_key(address)
        failures = self._addresses.get(address)
        if failures is not None and now in failures.failures:
            failures.failures.remove(now)
        self._pairs.pop((account, address), None)
        self._accounts.pop(account, None)

    def unlock(self, account: str) -> None:
        """An engineer lifted the account's waits (rules 2 and 3; an address keeps its own)."""
        for key in [key for key in self._pairs if key[0] == account]:
            del self._pairs[key]
        self._accounts.pop(account, None)

    def restricted(self, account: str, now: float) -> bool:
        """True while the account is under attack (rule 3) or locked from some address (rule 2)."""
        if self._under_attack(account, now):
            return True
        return any(
            key[0] == account and self._pair_held(run, now) for key, run in self._pairs.items()
        )

    def _under_attack(self, account: str, now: float) -> bool:
        """Rule 3 applies: F wrong passwords in a row for ``account``, from anywhere, the last
        of them within L."""
        run = self._accounts.get(account)
        return run is not None and self._account_held(run, now)

    def _address_held(self, state: _Address, now: float) -> bool:
        """Rule 1 holds for the address (kept when a table is full)."""
        failures = state.failures
        limit = self.address_limit
        return len(failures) >= limit and failures[-limit] > now - self.lockout_seconds

    def _pair_held(self, run: _Run, now: float) -> bool:
        """Rule 2 holds for the pair (kept when a table is full)."""
        return run.failures >= self.max_failures and now < run.last + self.lockout_seconds

    def _account_held(self, run: _Run, now: float) -> bool:
        """Rule 3 holds for the account and it failed within L (kept when a table is full)."""
        return run.failures >= self.max_failures and now < run.last + self.lockout_seconds

    def _recent(self, address: str, now: float, *, create: bool) -> deque[float]:
        """The address's wrong passwords within the lockout time (older ones dropped)."""
        state = self._addresses.get(address)
        if state is None:
            if not create:
                return deque()
            state = self._addresses[address] = _Address()
        failures = state.failures
        while failures and failures[0] <= now - self.lockout_seconds:
            failures.popleft()
        while len(failures) > self.address_limit:
            failures.popleft()
        return failures


K = TypeVar("K", str, tuple[str, str])
V = TypeVar("V")


def _remember(table: OrderedDict[K, V], key: K, held: Callable[[V], bool]) -> None:
    """Mark ``key`` as just failed; beyond MAX_REMEMBERED forget the least recently failed
    entry that holds no wait (``held`` false), or, when every one holds one, the least
    recently failed of all: a flood of new keys cannot push a held lock out."""
    table.move_to_end(key)
    while len(table) > MAX_REMEMBERED:
        victim = next((k for k, v in table.items() if k != key and not held(v)), None)
        if victim is None:
            table.popitem(last=False)
        else:
            del table[victim]


def _run(table: OrderedDict[K, _Run], key: K, held: Callable[[_Run], bool]) -> _Run:
    """The run of wrong passwords kept under ``key`` (a new one if none), marked as failed."""
    run = table.get(key)
    if run is None:
        run = table[key] = _Run()
    _remember(table, key, held)
    return run


class LoginThrottle:
    """:class:`Throttle` on the panel's clock, safe for FastAPI's worker threads."""

    def __init__(self, clock: Clock, max_failures: int, lockout_seconds: float) -> None:
        self._clock = clock
        self._throttle = Throttle(max_failures, lockout_seconds)
        self._lock = threading.Lock()

    @property
    def lockout_seconds(self) -> float:
        """How long a lock lasts (rules 1 and 2)."""
        return self._throttle.lockout_seconds

    def begin(self, account: str, address: str) -> tuple[Verdict, float]:
        """May this password be checked now? If so it counts as wrong until succeeded();
        also the time to hand to succeeded()."""
        now = self._clock.now()
        with self._lock:
            return self._throttle.begin(account, address, now), now

    def succeeded(self, account: str, address: str, begun: float) -> None:
        """The password begun at ``begun`` was right."""
        with self._lock:
            self._throttle.succeeded(account, address, begun)

    def check(self, account: str, address: str) -> Verdict:
        """Would a password for ``account`` from ``address`` wait now? (Counts nothing.)"""
        now = self._clock.now()
        with self._lock:
            return self._throttle.check(account, address, now)

    def unlock(self, account: str) -> None:
        """An engineer's Unlock on /users."""
        with self._lock:
            self._throttle.unlock(account)

    def restricted(self, account: str) -> bool:
        """True while the account is under attack or locked from an address ("locked" on
        /users)."""
        now = self._clock.now()
        with self._lock:
            return self._throttle.restricted(account, now)
