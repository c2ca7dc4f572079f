"""Password throttling: how often a password may be tried, per address and per account.

Every password check goes through here: the login, the first-run setup token, and the current
password asked on /account. With F = ``login_max_failures`` and L = ``lockout_seconds``, and an
address as :func:`gateway.netaddr.host_address` says (the exact address: an IPv6 host's
neighbours in its /64 VLAN are other addresses, so one host's wrong passwords never make them
wait; rule 4 bounds a guesser rotating addresses inside a /64):

1. **Address**: at most ``ADDRESS_FACTOR`` × F wrong passwords (any user names, unknown ones
   included) from one address within L. At that many the address waits until the oldest of them
   is L old. A right password takes none of them back, so a guesser who also holds an account of
   their own cannot wipe the count by logging in with it between guesses.
2. **Account from an address**: F wrong passwords in a row for one account from one address
   lock that account *from that address* for L. A right password from there for that account, or
   an engineer's *Unlock*, starts the count again.
3. **Account under attack, per address**: while rule 4's account is under attack, each address
   waits ``ACCOUNT_DELAY`` seconds after *its own* last wrong try for that account before its
   next one.
4. **Account under attack, shared by unknown addresses**: a *known* address of an account is one
   from which a right password for it was given within ``KNOWN_SECONDS`` (the engineer's usual
   desk). After F wrong passwords for an account from addresses not known for it, each within L
   of the one before, the account is *under attack* until L passes without another (or an
   engineer's *Unlock*): then all its unknown addresses *together* get one try per
   ``ACCOUNT_DELAY``, counted from the last try by any of them. A right password does not end
   the attack (the guesser is still at it). Known addresses are exempt from this rule.

The bound: a guesser with any number of addresses gets at most F + L/``ACCOUNT_DELAY`` tries at
one account in its first L and one per ``ACCOUNT_DELAY`` after (≤ 365 in an hour with F = 5,
``ACCOUNT_DELAY`` = 10 s; tests/web/test_throttle.py simulates 250 addresses): NIST SP 800-63B
§5.2.2's 100 consecutive failures per account as a rate (100 per 1000 s), not a hard lock,
which would let any neighbour lock the engineers out. The guarantee: no try
from another address ever delays or refuses a try from an account's known address (rules 1-3
count per address or per pair, and rule 4 exempts it), so the engineer at their usual desk gets
in at their first try with the right password, whatever a neighbour does. The price: an engineer
at an address new for the account (or after a restart, which forgets the known addresses) shares
the unknown addresses' budget while the account is under attack; another engineer's *Unlock*,
or the usual desk, lets them in. The account-wide budget tripping is reported once per L
(:attr:`Verdict.attack`) so the panel logs and audits it.

A check is counted as wrong from the moment it is allowed (:meth:`Throttle.begin`) until it
turns out right (:meth:`Throttle.succeeded`), so requests sent in parallel get no more tries than
the rules allow. While any rule holds, even the right password is refused, with the wait.

Pure and time passed in (:class:`Throttle`); :class:`LoginThrottle` adds the clock and a lock
for the panel's worker threads. Kept in memory, at most ``MAX_REMEMBERED`` addresses, pairs,
accounts and known pairs each; beyond that the least recently failed entry *that holds no wait*
is forgotten first, so a guesser with many addresses cannot flush a lock away by failing
elsewhere (known pairs are added only by right passwords; the least recently used goes). Only
when every entry of a table holds a wait is the least recently failed of them forgotten (memory
stays bounded; it takes that many locked addresses). A restart lifts every wait and forgets the
known addresses.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from gateway.clock import Clock
from gateway.netaddr import host_address

ADDRESS_FACTOR = 3
ACCOUNT_DELAY = 10.0  # seconds between tries for an account under attack (rules 3 and 4)
KNOWN_SECONDS = 90 * 86400.0  # a right password makes its address known for the account (rule 4)
MAX_REMEMBERED = 4096


class Rule(StrEnum):
    """Which rule makes a try wait."""

    ADDRESS = "address"
    ACCOUNT_FROM_ADDRESS = "account from this address"
    ACCOUNT = "account under attack"
    ACCOUNT_SHARED = "account under attack, from new addresses"


@dataclass(frozen=True)
class Verdict:
    """Whether a password may be tried now; if not, for how long and by which rule."""

    wait: float | None = None  # seconds; None: go ahead
    rule: Rule | None = None
    attack: bool = False  # this try put the account under attack (rule 4; once per L)

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
class _Account(_Run):
    """Rule 4's count: wrong passwords from unknown addresses (``failures``, ``last``), the
    last try by any unknown address (``shared``) and when the attack was last reported."""

    shared: float = float("-inf")
    reported: float = float("-inf")


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
        self._accounts: OrderedDict[str, _Account] = OrderedDict()
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()  # → last right one

    def check(self, account: str, address: str, now: float) -> Verdict:
        """May a password for ``account`` from ``address`` be tried now? (Counts nothing.)"""
        address = host_address(address)
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
        if attacked and not self._is_known(account, address, now):
            shared = self._accounts[account].shared
            if now < shared + ACCOUNT_DELAY:
                waits.append((shared + ACCOUNT_DELAY - now, Rule.ACCOUNT_SHARED))
        if not waits:
            return Verdict()
        wait, rule = max(waits)
        return Verdict(wait, rule)

    def begin(self, account: str, address: str, now: float) -> Verdict:
        """Check, and when allowed count the try as wrong until :meth:`succeeded` says not."""
        verdict = self.check(account, address, now)
        if not verdict.allowed:
            return verdict
        address = host_address(address)
        self._recent(address, now, create=True).append(now)
        _remember(self._addresses, address, lambda state: self._address_held(state, now))
        pair = _run(self._pairs, (account, address), lambda run: self._pair_held(run, now))
        pair.failures += 1
        pair.last = now
        if self._is_known(account, address, now):
            return verdict
        run = self._accounts.get(account)
        if run is None or now >= run.last + self.lockout_seconds:
            run = self._accounts[account] = _Account()  # none within L: a fresh count
        _remember(self._accounts, account, lambda run: self._account_held(run, now))
        run.failures += 1
        run.last = run.shared = now
        if run.failures >= self.max_failures and now >= run.reported + self.lockout_seconds:
            run.reported = now
            return Verdict(attack=True)
        return verdict

    def succeeded(self, account: str, address: str, now: float) -> None:
        """The password begun at ``now`` was right: take back that one try, start the pair's
        count (rule 2) again and make the address known for the account (rule 4). The address
        keeps its other wrong ones; an attack on the account goes on (rule 4)."""
        address = host_address(address)
        failures = self._addresses.get(address)
        if failures is not None and now in failures.failures:
            failures.failures.remove(now)
        self._pairs.pop((account, address), None)
        run = self._accounts.get(account)
        if run is not None and run.last == now and not self._is_known(account, address, now):
            run.failures -= 1  # begun from an unknown address: that one was not wrong
        self.known(account, address, now)

    def known(self, account: str, address: str, now: float) -> None:
        """The right password for ``account`` was given from ``address`` at ``now`` (a login,
        or the first engineer's setup): the address is known for the account (rule 4)."""
        key = (account, host_address(address))
        self._known[key] = now
        self._known.move_to_end(key)
        while len(self._known) > MAX_REMEMBERED:
            self._known.popitem(last=False)

    def unlock(self, account: str) -> None:
        """An engineer lifted the account's waits (rules 2-4; an address keeps its own)."""
        for key in [key for key in self._pairs if key[0] == account]:
            del self._pairs[key]
        self._accounts.pop(account, None)

    def restricted(self, account: str, now: float) -> bool:
        """True while the account is under attack (rule 4) or locked from some address (rule 2)."""
        if self._under_attack(account, now):
            return True
        return any(
            key[0] == account and self._pair_held(run, now) for key, run in self._pairs.items()
        )

    def _is_known(self, account: str, address: str, now: float) -> bool:
        """A right password for ``account`` came from ``address`` within KNOWN_SECONDS."""
        last = self._known.get((account, address))
        return last is not None and now < last + KNOWN_SECONDS

    def _under_attack(self, account: str, now: float) -> bool:
        """Rules 3 and 4 apply: F wrong passwords for ``account`` from unknown addresses, each
        within L of the one before, the last of them within L."""
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
        """Rule 4 holds for the account (kept when a table is full)."""
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

    def known(self, account: str, address: str) -> None:
        """The first engineer set their password from ``address`` (/setup)."""
        now = self._clock.now()
        with self._lock:
            self._throttle.known(account, address, now)

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
