"""The front door's rules for its own failures (gateway/listener/faults.py): pure, no socket."""

from __future__ import annotations

import errno

import pytest

from gateway.listener.faults import (
    ACCEPT_PAUSE,
    ACCEPT_RUN,
    KINDS_REMEMBERED,
    LOG_INTERVAL,
    LOUD_PER_INTERVAL,
    PAUSE_MAX,
    AcceptFaults,
    Faults,
    LogBudget,
    accept_error_is_resource,
    signature,
)


def _raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:  # the point is to get its traceback
        return caught


def test_the_same_error_in_turn_after_turn_pauses_longer_up_to_the_cap() -> None:
    faults = Faults()
    pauses = [faults.failed("E at x:1", now=float(turn)).pause for turn in range(8)]
    assert pauses == [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, PAUSE_MAX, PAUSE_MAX]


def test_a_turn_that_completes_ends_the_run_and_another_error_does_not() -> None:
    faults = Faults()
    faults.failed("E at x:1", 0.0)
    assert faults.failed("E at x:1", 0.0).pause > 0
    faults.succeeded()
    assert faults.failed("E at x:1", 0.0).pause == 0.0
    assert faults.failed("F at y:2", 0.0).pause == 0.05  # failed turns in a row, whatever the kind
    assert faults.failed("F at y:2", 0.0).streak == 3


def test_two_alternating_errors_back_off_and_are_logged_once_each() -> None:
    # Before: the streak and the "already logged" memory held one kind each, so A, B, A, B...
    # paused 0 and logged ERROR with a traceback on every turn: a hot core and a full disk.
    faults = Faults()
    seen = [faults.failed(("A at x:1", "B at y:2")[turn % 2], now=float(turn)) for turn in range(8)]
    assert [f.pause for f in seen] == [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, PAUSE_MAX, PAUSE_MAX]
    assert [f.loud for f in seen] == [True, True] + [False] * 6


def test_each_kind_is_loud_once_per_interval_even_across_good_turns() -> None:
    faults = Faults()
    assert faults.failed("E at x:1", 0.0).loud
    faults.succeeded()
    assert not faults.failed("E at x:1", 1.0).loud  # a caller that provokes it each time
    assert faults.failed("F at y:2", 2.0).loud
    assert not faults.failed("E at x:1", 3.0).loud  # E is remembered by its own kind
    assert faults.failed("E at x:1", LOG_INTERVAL).loud


def test_many_kinds_are_loud_a_few_times_per_interval_in_all() -> None:
    budget = LogBudget(interval=60.0, per_interval=LOUD_PER_INTERVAL, kinds=KINDS_REMEMBERED)
    loud = [budget.loud(f"E{kind} at x:{kind}", now=kind * 0.1) for kind in range(100)]
    assert sum(loud) == LOUD_PER_INTERVAL and all(loud[:LOUD_PER_INTERVAL])
    assert budget.loud("E99 at x:99", now=60.0)  # a new interval: room again


def test_the_kinds_remembered_are_bounded_least_recently_logged_first() -> None:
    budget = LogBudget(interval=60.0, per_interval=10, kinds=2)
    assert budget.loud("A", 0.0) and budget.loud("B", 1.0) and budget.loud("C", 2.0)
    assert not budget.loud("C", 3.0) and not budget.loud("B", 3.0)
    assert budget.loud("A", 3.0)  # forgotten to keep the memory bounded: loud again


def test_a_persistent_accept_errno_pauses_and_is_loud_after_a_run() -> None:
    # Before: an errno other than the resource ones never paused and stayed at DEBUG, so EPERM
    # from a seccomp policy spun a core with the port serving nobody and nothing at ERROR.
    faults = AcceptFaults()
    seen = [faults.failed(errno.EPERM, now=turn * 0.001) for turn in range(ACCEPT_RUN + 2)]
    assert all(f.pause == 0.0 and not f.loud for f in seen[: ACCEPT_RUN - 1])
    assert seen[ACCEPT_RUN - 1].pause == ACCEPT_PAUSE and seen[ACCEPT_RUN - 1].loud
    assert seen[ACCEPT_RUN].pause == ACCEPT_PAUSE and not seen[ACCEPT_RUN].loud  # once a minute
    assert seen[-1].run == ACCEPT_RUN + 2


def test_an_accept_run_is_ended_by_an_accept_or_another_errno() -> None:
    faults = AcceptFaults(run_limit=3)
    faults.failed(errno.ECONNABORTED, 0.0)
    faults.failed(errno.ECONNABORTED, 0.0)
    faults.succeeded()
    assert faults.failed(errno.ECONNABORTED, 0.0).run == 1
    assert faults.failed(errno.EPROTO, 0.0).pause == 0.0
    assert faults.failed(errno.ECONNABORTED, 0.0).run == 1


def test_an_accept_resource_error_pauses_at_once_and_is_loud_once() -> None:
    faults = AcceptFaults()
    first, second = (faults.failed(errno.EMFILE, 0.0) for _ in range(2))
    assert (first.pause, first.loud) == (ACCEPT_PAUSE, True)
    assert (second.pause, second.loud) == (ACCEPT_PAUSE, False)


def test_errors_are_the_same_by_class_and_line_not_by_message() -> None:
    first, second = (_raised(KeyError(port)) for port in (104, 11112))
    assert signature(first) == signature(second)
    assert signature(first) != signature(_raised(ValueError(104)))
    assert signature(KeyError("never raised")) == "KeyError"


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_accept_out_of_a_resource(code: int) -> None:
    assert accept_error_is_resource(OSError(code, "out"))


@pytest.mark.parametrize(
    "code", [errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETUNREACH, errno.EHOSTDOWN]
)
def test_accept_error_of_one_caller(code: int) -> None:
    assert not accept_error_is_resource(OSError(code, "that caller"))
