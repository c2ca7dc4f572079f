"""When the front door's own loop fails: what to log, whether to pause. Pure, the time passed in.

The front door (``gate.py``) is one thread for every caller not yet admitted. If it ended, the
port would stay open (the kernel completes TCP handshakes on the listening socket by itself) and
every caller would hang until its own timeout, with nothing said. So no error ends it. The rules:

* **An error in one turn of the loop** (accept, admitting a connection, a pending connection's
  step, expiry) is counted (``errors``) and the next turn runs. The first of its kind is logged at
  ERROR with its traceback; the same one again within ``log_interval`` at DEBUG (log the
  transition, not the repeat). Two errors are the same when they are of the same class raised at
  the same line: their messages may differ by a port or an address.
* **The same error in consecutive turns pauses the loop** before the next one: ``PAUSE_FIRST``,
  doubling, at most ``PAUSE_MAX``; a turn that completes ends the streak. An error that recurs
  on every turn (the selector, expiry) therefore never spins a core, and one that a caller
  provokes costs that caller's turn only.
* **accept(2) errors are of two kinds.** EMFILE, ENFILE, ENOBUFS and ENOMEM say the process or the
  host is out of a resource: the caller stays in the backlog, the next accept fails at once, so
  the loop pauses ``ACCEPT_PAUSE`` and serves those it has meanwhile (logged as a turn error,
  first at ERROR). Every other one concerns that one connection only (ECONNABORTED: the caller
  reset before we took it; EPERM: a firewall rule; EPROTO and the network errors Linux passes on
  from the new socket, which accept(2) says to treat as EAGAIN): logged at DEBUG, and the loop
  accepts the next caller at once.
"""

from __future__ import annotations

import errno
import traceback
from dataclasses import dataclass

PAUSE_FIRST = 0.05  # seconds before the second turn in a row to fail the same way
PAUSE_MAX = 1.0  # a front door that answers a second late is degraded, not gone
ACCEPT_PAUSE = 0.1  # seconds between accept() attempts while out of descriptors or memory
LOG_INTERVAL = 60.0  # the same error is logged at ERROR at most once per interval

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def accept_error_is_resource(exc: OSError) -> bool:
    """Whether an accept() error means "out of a resource" (pause) rather than "this caller"."""
    return exc.errno in RESOURCE_ERRNOS


def signature(exc: BaseException) -> str:
    """What makes two errors the same one: the class and the line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__qualname__}{where}"


@dataclass(frozen=True)
class Fault:
    """What to do about one failed turn."""

    loud: bool  # log at ERROR with the traceback; else at DEBUG
    pause: float  # seconds to wait before the next turn (0: none)
    streak: int  # turns in a row that failed this way, this one included


class Faults:
    """The failures of one loop, as :func:`signature` names them (see the module docstring)."""

    def __init__(self, log_interval: float = LOG_INTERVAL) -> None:
        self._log_interval = log_interval
        self._streak_of: str | None = None
        self._streak = 0
        self._logged: str | None = None  # the last error logged at ERROR, and when
        self._logged_at = float("-inf")

    def failed(self, cause: str, now: float) -> Fault:
        """A turn failed with ``cause`` at ``now``."""
        if cause == self._streak_of:
            self._streak += 1
        else:
            self._streak_of, self._streak = cause, 1
        loud = cause != self._logged or now - self._logged_at >= self._log_interval
        if loud:
            self._logged, self._logged_at = cause, now
        pause = 0.0 if self._streak == 1 else min(PAUSE_MAX, PAUSE_FIRST * 2 ** (self._streak - 2))
        return Fault(loud=loud, pause=pause, streak=self._streak)

    def succeeded(self) -> None:
        """A turn completed: the streak, if any, is over."""
        self._streak_of, self._streak = None, 0
