"""Login throttling: wrong passwords lock the account, and many from one address lock the address.

Per account: ``login_max_failures`` wrong passwords in a row lock it for ``lockout_minutes``
(kept in the users table, so a restart does not lift it). Per address: ``ADDRESS_FACTOR`` times
as many failures in a row, for any names including unknown ones, lock the address for the same
time (kept in memory: a restart lifts it). The factor lets colleagues behind one laptop or NAT
mistype without locking each other out, while a guesser spraying user names is still stopped.
While locked, even the right password is refused, with the same words as a wrong one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.web.auth.users import UserStore

ADDRESS_FACTOR = 3
MAX_ADDRESSES = 4096  # remembered at once; the oldest is forgotten first


@dataclass
class _AddressState:
    failures: int = 0
    locked_until: float | None = None


class LoginThrottle:
    """Decides whether a login may be tried now, and counts its outcome."""

    def __init__(
        self, users: UserStore, clock: Clock, max_failures: int, lockout_seconds: float
    ) -> None:
        self._users = users
        self._clock = clock
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._addresses: OrderedDict[str, _AddressState] = OrderedDict()
        self._lock = threading.Lock()

    def blocked_for(self, username: str, address: str) -> float | None:
        """Seconds until a login for this name from this address may be tried, or None."""
        now = self._clock.now()
        waits: list[float] = []
        until = self._users.locked_until(username)
        if until is not None and until > now:
            waits.append(until - now)
        with self._lock:
            state = self._addresses.get(address)
            if state is not None and state.locked_until is not None:
                if state.locked_until > now:
                    waits.append(state.locked_until - now)
                else:
                    del self._addresses[address]
        return max(waits) if waits else None

    def failed(self, username: str, address: str) -> bool:
        """Count a wrong password; True if the account or the address is now locked."""
        locked = self._users.record_failure(username, self.max_failures, self.lockout_seconds)
        with self._lock:
            state = self._addresses.pop(address, None) or _AddressState()
            state.failures += 1
            if state.failures >= self.max_failures * ADDRESS_FACTOR:
                state.failures = 0
                state.locked_until = self._clock.now() + self.lockout_seconds
                locked = True
            self._addresses[address] = state  # most recent last
            while len(self._addresses) > MAX_ADDRESSES:
                self._addresses.popitem(last=False)
        return locked

    def succeeded(self, username: str, address: str) -> None:
        """A right password: both counts start again from zero."""
        self._users.clear_failures(username)
        with self._lock:
            self._addresses.pop(address, None)
