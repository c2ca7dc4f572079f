"""The front door's rules for its own failures (gateway/listener/faults.py): pure, no socket."""

from __future__ import annotations

import errno

import pytest

from gateway.listener.faults import (
    LOG_INTERVAL,
    PAUSE_MAX,
    Faults,
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


def test_a_turn_that_completes_or_another_error_ends_the_streak() -> None:
    faults = Faults()
    faults.failed("E at x:1", 0.0)
    assert faults.failed("E at x:1", 0.0).pause > 0
    faults.succeeded()
    assert faults.failed("E at x:1", 0.0).pause == 0.0
    assert faults.failed("F at y:2", 0.0).pause == 0.0  # another error: not a repeat
    assert faults.failed("F at y:2", 0.0).streak == 2


def test_the_same_error_is_loud_once_per_interval_even_across_good_turns() -> None:
    faults = Faults()
    assert faults.failed("E at x:1", 0.0).loud
    faults.succeeded()
    assert not faults.failed("E at x:1", 1.0).loud  # a caller that provokes it each time
    assert faults.failed("F at y:2", 2.0).loud
    assert faults.failed("E at x:1", 3.0).loud  # after another: a transition again
    assert not faults.failed("E at x:1", 3.0 + LOG_INTERVAL - 1).loud
    assert faults.failed("E at x:1", 3.0 + LOG_INTERVAL).loud


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
