"""The supervisor owns the threads: ordered start, reverse stop, restarts within a budget."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.clock import FakeClock, SystemClock
from gateway.supervisor import RestartBudgetExceededError, Supervisor


def test_services_start_in_order_and_stop_in_reverse() -> None:
    calls: list[str] = []
    sup = Supervisor(SystemClock())
    for name in ("spool", "lane", "watch"):
        sup.add(
            name,
            lambda n=name: calls.append(f"start {n}"),
            lambda n=name: calls.append(f"stop {n}"),
        )
    sup.start_all()
    sup.stop_all()
    assert calls == [
        "start spool",
        "start lane",
        "start watch",
        "stop watch",
        "stop lane",
        "stop spool",
    ]


def test_a_failing_start_stops_what_was_started() -> None:
    calls: list[str] = []
    sup = Supervisor(SystemClock())
    sup.add("spool", lambda: calls.append("start spool"), lambda: calls.append("stop spool"))

    def boom() -> None:
        raise OSError("disk gone")

    sup.add("lane", boom, lambda: calls.append("stop lane"))
    with pytest.raises(OSError, match="disk gone"):
        sup.start_all()
    assert calls == ["start spool", "stop spool"]


def test_thread_bodies_get_the_stop_signal_and_are_joined() -> None:
    seen: list[str] = []

    def body(stop: threading.Event) -> None:
        stop.wait(10)
        seen.append("stopped")

    sup = Supervisor(SystemClock())
    sup.add_thread("a", body)
    sup.add_thread("b", body)
    sup.start_all()
    started = time.monotonic()
    sup.stop_all()
    assert seen == ["stopped", "stopped"]
    assert time.monotonic() - started < 2


def test_a_dead_thread_is_restarted_until_the_budget_is_spent() -> None:
    clock = FakeClock()
    runs: list[int] = []

    def dies(stop: threading.Event) -> None:
        runs.append(1)
        raise RuntimeError("bug")

    sup = Supervisor(clock, restart_limit=2, restart_window=60)
    sup.add_thread("flaky", dies)
    sup.start_all()

    def settle() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            t.name == "flaky" and t.is_alive() for t in threading.enumerate()
        ):
            time.sleep(0.01)

    settle()
    sup.check()  # restart 1
    settle()
    sup.check()  # restart 2
    settle()
    with pytest.raises(RestartBudgetExceededError, match="flaky"):
        sup.check()
    assert len(runs) == 3
    sup.stop_all()


def test_restarts_spread_over_time_stay_within_budget() -> None:
    clock = FakeClock()

    def dies(stop: threading.Event) -> None:
        raise RuntimeError("bug")

    sup = Supervisor(clock, restart_limit=1, restart_window=60)
    sup.add_thread("flaky", dies)
    sup.start_all()
    for _ in range(4):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(t.name == "flaky" for t in threading.enumerate()):
            time.sleep(0.01)
        sup.check()
        clock.advance(120)
    sup.stop_all()


def test_a_thread_stuck_past_the_stop_deadline_is_interrupted_and_joined() -> None:
    # Issue 10 B13: a lane stuck in a C-STORE was given up on and left running.
    unblock = threading.Event()
    calls: list[str] = []

    def stuck(stop: threading.Event) -> None:
        stop.wait(10)
        unblock.wait(10)  # ignores the stop, as a thread blocked in a network call does
        calls.append("returned")

    def interrupt() -> None:
        calls.append("interrupted")
        unblock.set()

    sup = Supervisor(SystemClock(), stop_timeout=0.2, interrupt_grace=5)
    sup.add("spool", lambda: None, lambda: calls.append("spool closed"))
    sup.add_thread("lane:pacs", stuck, interrupt)
    sup.start_all()
    started = time.monotonic()
    sup.stop_all()
    assert calls == ["interrupted", "returned", "spool closed"]  # joined before the next step
    assert time.monotonic() - started < 5
    assert not any(t.name == "lane:pacs" for t in threading.enumerate())
