"""When the front door's own loop fails: what to log, whether to pause. Pure, the time passed in.

The front door (``gate.py``) is one thread for every caller not yet admitted. If it ended, the
port would stay open (the kernel completes TCP handshakes on the listening socket by itself) and
every caller would hang until its own timeout, with nothing said. So no error ends it. The rules:

* **An error in one turn of the loop** (accept, admitting a connection, a pending connection's
  step, expiry) is counted (``errors``) and the next turn runs.
* **Failed turns in a row pause the loop** before the next one, whatever their errors:
  ``PAUSE_FIRST``, doubling, at most ``PAUSE_MAX``; a turn that completes ends the run. The run
  counts turns, not kinds, so two errors that alternate (A, B, A, B...) back off exactly as one
  repeated error does: an error that recurs on every turn (the selector, expiry) never spins a
  core, and one that a caller provokes costs that caller's turn only.
* **What is logged at ERROR** (with the traceback) is rationed by :class:`LogBudget`: each kind
  of error once per ``log_interval``, the rest at DEBUG (log the transition, not the repeat), and
  at most ``LOUD_PER_INTERVAL`` ERROR lines per interval in all, so that no mix of errors fills
  the disk the spool shares. The kinds remembered are bounded (``KINDS_REMEMBERED``, the least
  recently logged forgotten first). Two errors are of one kind when they are of the same class
  raised at the same line: their messages may differ by a port or an address.
* **accept(2) errors** (:class:`AcceptFaults`), every one counted (``accept_failed``). EMFILE,
  ENFILE, ENOBUFS and ENOMEM say the process or the host is out of a resource: the caller stays in
  the backlog, the next accept fails at once, so the loop pauses ``ACCEPT_PAUSE`` and serves
  those it has meanwhile. Any other one normally concerns that one connection only
  (ECONNABORTED: the caller reset before we took it; EPROTO and the network errors Linux passes
  on from the new socket, which accept(2) says to treat as EAGAIN): DEBUG, and the loop accepts
  the next caller at once. But the same errno ``ACCEPT_RUN`` times in a row with no accept in
  between is no caller's doing (EPERM from a seccomp or LSM policy, EINVAL or EBADF from a bug):
  from then on it is treated as the resource errors are, paused and logged at ERROR (once per
  interval), else the loop would spin a core with the port serving nobody and nothing said.
"""

from __future__ import annotations

import errno
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass

PAUSE_FIRST = 0.05  # seconds before the second failed turn in a row
PAUSE_MAX = 1.0  # a front door that answers a second late is degraded, not gone
ACCEPT_PAUSE = 0.1  # seconds between accept() attempts while out of descriptors or memory
ACCEPT_RUN = 64  # one errno this many times in a row, no accept between: not one caller's
LOG_INTERVAL = 60.0  # one kind of error is logged at ERROR at most once per interval
LOUD_PER_INTERVAL = 5  # ERROR lines per interval in all, whatever the kinds
KINDS_REMEMBERED = 64  # kinds whose last ERROR line is remembered; a bound, not a limit

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def accept_error_is_resource(exc: OSError) -> bool:
    """Whether an accept() error means "out of a resource" (pause) rather than "this caller"."""
    return exc.errno in RESOURCE_ERRNOS


def signature(exc: BaseException) -> str:
    """What makes two errors the same one: the class and the line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__qualname__}{where}"


class LogBudget:
    """Which errors are logged at ERROR: each kind once per interval, a few per interval in all."""

    def __init__(
        self,
        interval: float = LOG_INTERVAL,
        per_interval: int = LOUD_PER_INTERVAL,
        kinds: int = KINDS_REMEMBERED,
    ) -> None:
        if interval <= 0 or per_interval < 1 or kinds < 1:
            raise ValueError("a log budget needs a positive interval and room for one line")
        self._interval = interval
        self._kinds = kinds
        self._logged_at: OrderedDict[str, float] = OrderedDict()  # least recently logged first
        self._recent: deque[float] = deque(maxlen=per_interval)  # the last ERROR lines' times

    def loud(self, kind: str, now: float) -> bool:
        """Whether an error of ``kind`` at ``now`` is logged at ERROR (it is then spent)."""
        last = self._logged_at.get(kind)
        if last is not None and now - last < self._interval:
            return False
        recent = self._recent
        if len(recent) == recent.maxlen and now - recent[0] < self._interval:
            return False  # the budget in all is spent: this one at DEBUG, next interval again
        recent.append(now)
        self._logged_at[kind] = now
        self._logged_at.move_to_end(kind)
        while len(self._logged_at) > self._kinds:
            self._logged_at.popitem(last=False)
        return True


@dataclass(frozen=True)
class Fault:
    """What to do about one failed turn."""

    loud: bool  # log at ERROR with the traceback; else at DEBUG
    pause: float  # seconds to wait before the next turn (0: none)
    streak: int  # turns in a row that failed, this one included, whatever their errors


class Faults:
    """The failed turns of one loop; kinds as :func:`signature` names them (module docstring)."""

    def __init__(self, log_interval: float = LOG_INTERVAL) -> None:
        self._budget = LogBudget(log_interval)
        self._streak = 0

    def failed(self, cause: str, now: float) -> Fault:
        """A turn failed with ``cause`` at ``now``."""
        self._streak += 1
        pause = 0.0 if self._streak == 1 else min(PAUSE_MAX, PAUSE_FIRST * 2 ** (self._streak - 2))
        return Fault(loud=self._budget.loud(cause, now), pause=pause, streak=self._streak)

    def succeeded(self) -> None:
        """A turn completed: the run of failed turns, if any, is over."""
        self._streak = 0


@dataclass(frozen=True)
class AcceptFault:
    """What to do about one failed accept()."""

    loud: bool  # log at ERROR; else at DEBUG
    pause: float  # seconds to wait before accepting again (0: take the next caller now)
    run: int  # accept() calls in a row that failed with this errno, this one included


class AcceptFaults:
    """The accept() failures of one listening socket (see the module docstring)."""

    def __init__(self, log_interval: float = LOG_INTERVAL, run_limit: int = ACCEPT_RUN) -> None:
        if run_limit < 1:
            raise ValueError("run_limit must be at least 1")
        self._budget = LogBudget(log_interval)
        self._run_limit = run_limit
        self._errno: int | None = None
        self._run = 0

    def failed(self, code: int | None, now: float) -> AcceptFault:
        """accept() failed with errno ``code`` at ``now``."""
        if code == self._errno:
            self._run += 1
        else:
            self._errno, self._run = code, 1
        if code not in RESOURCE_ERRNOS and self._run < self._run_limit:
            return AcceptFault(loud=False, pause=0.0, run=self._run)  # that caller's
        return AcceptFault(
            loud=self._budget.loud(f"accept {code}", now), pause=ACCEPT_PAUSE, run=self._run
        )

    def succeeded(self) -> None:
        """accept() returned a connection: a run, if any, is over."""
        self._errno, self._run = None, 0
