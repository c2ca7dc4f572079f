"""The send window tells a PACS that stopped reading from one that hung up (fake clock and DUL).

The real stall, against storescp, is tests/forward/test_stall.py; these pin the race between
the window's own stall timer and the socket's send timeout, which fire at about the same time.
"""

from __future__ import annotations

import queue
from types import SimpleNamespace

import pytest
from pynetdicom.pdu_primitives import P_DATA

from gateway.forward import link
from gateway.forward.link import LinkLostError, _SendWindow
from gateway.forward.outcome import FailureClass

STALL = 1.0


class FakeTime:
    """time.monotonic and time.sleep on a clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class StuckDul:
    """A DUL whose queue never drains (the peer stopped reading) and that dies at ``dies_at``."""

    def __init__(self, clock: FakeTime, dies_at: float | None) -> None:
        self.clock = clock
        self.dies_at = dies_at
        self.to_provider_queue: queue.Queue[object] = queue.Queue()
        self.state_machine = SimpleNamespace(current_state="Sta6")

    def is_alive(self) -> bool:
        return self.dies_at is None or self.clock.now < self.dies_at

    def send_pdu(self, primitive: object) -> None:
        self.to_provider_queue.put(primitive)


def send_into_full_window(monkeypatch: pytest.MonkeyPatch, dies_at: float | None) -> LinkLostError:
    clock = FakeTime()
    monkeypatch.setattr(link, "time", clock)
    dul = StuckDul(clock, dies_at)
    _SendWindow(SimpleNamespace(dul=dul), limit=2, stall_seconds=STALL)  # wraps dul.send_pdu
    dul.send_pdu(P_DATA())
    dul.send_pdu(P_DATA())  # the window is full; nothing will ever leave it
    with pytest.raises(LinkLostError) as caught:
        dul.send_pdu(P_DATA())
    return caught.value


def test_a_peer_that_never_reads_is_a_stall_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    error = send_into_full_window(monkeypatch, dies_at=None)
    assert error.failure_class is FailureClass.TIMEOUT
    assert "stopped reading for 1 s" in str(error)


def test_the_socket_send_timeout_firing_first_is_still_a_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pynetdicom's thread dies on its own send timeout a little before the window's timer.
    error = send_into_full_window(monkeypatch, dies_at=0.95 * STALL)
    assert error.failure_class is FailureClass.TIMEOUT
    assert "stopped reading" in str(error)


def test_a_connection_lost_early_is_a_lost_association(monkeypatch: pytest.MonkeyPatch) -> None:
    error = send_into_full_window(monkeypatch, dies_at=0.1 * STALL)
    assert error.failure_class is FailureClass.ASSOCIATION_ABORTED
    assert "lost during the C-STORE" in str(error)
