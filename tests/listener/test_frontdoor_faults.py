"""No failure of its own closes the DICOM port: the front door and the association slots survive.

An association thread that does not start gives its slot back (else each failure held one for
good and, after ``max_associations`` of them, every caller got "local limit exceeded" until a
restart); an error while admitting a caller, or in any turn of the front door's loop, no longer
ends the loop (the port stayed open and every later caller hung); an accept() error that concerns
one caller (ECONNABORTED) no longer stalls the loop. See gateway/listener/faults.py.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from gateway.forward.tlsctx import server_context
from gateway.listener import handshake
from gateway.listener.admission import AdmissionLimits, PendingTable
from gateway.listener.faults import ACCEPT_PAUSE, ACCEPT_RUN
from gateway.listener.gate import Gate, GatePlan
from gateway.listener.guard import PduLimits
from tests.conftest import Pki
from tests.harness import wait_until
from tests.listener.conftest import StartListener
from tests.listener.support import (
    association_rq,
    closed_by_peer,
    connect,
    echoscu,
    listener_settings,
    reply,
    server_tls,
)

# The threads that serve one association each (server.py names them by the caller's port).
ASSOCIATION_THREAD = re.compile(r"listener-\d+")


def test_an_association_thread_that_does_not_start_gives_its_slot_back(
    start_listener: StartListener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    listener = start_listener(listener_settings(max_associations=2))
    failures = 3  # more than max_associations: on the old code the port was closed for good
    refused: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if ASSOCIATION_THREAD.fullmatch(thread.name) and len(refused) < failures:
            refused.append(thread.name)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    answers = []
    for _ in range(failures):
        with connect(listener.address[1]) as sock:
            sock.sendall(association_rq())
            answers.append(reply(sock))

    result = echoscu(listener.address[1])  # the slots are free again: not "local limit exceeded"
    assert result.returncode == 0, result.stdout + result.stderr
    assert answers == [handshake.BUSY_REJECT] * failures  # transient: the modality retries
    assert len(refused) == failures
    assert listener.stats()["errors"] == failures
    assert wait_until(lambda: listener.stats()["active"] == 0)
    not_started = [r for r in caplog.records if r.getMessage() == "association thread not started"]
    assert len(not_started) == failures
    assert all(r.levelno == logging.ERROR for r in not_started)


def test_an_error_while_admitting_a_caller_does_not_close_the_port(
    start_listener: StartListener,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = start_listener(listener_settings(), ssl_context=server_context(server_tls(pki)))
    real_start_tls = handshake.start_tls
    calls: list[int] = []

    def start_tls(raw: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
        calls.append(raw.fileno())
        if len(calls) == 1:
            raise ValueError("a bug in admitting this caller")
        return real_start_tls(raw, context)

    monkeypatch.setattr(handshake, "start_tls", start_tls)
    with connect(listener.address[1]) as first:
        assert closed_by_peer(first)  # that caller is closed, not left hanging

    result = echoscu(listener.address[1], tls=(pki.ca, pki.pacs.cert, pki.pacs.key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(calls) == 2
    assert listener.stats()["errors"] == 1
    assert wait_until(lambda: listener.pending() == 0)
    [logged] = [r for r in caplog.records if r.getMessage() == "front door error"]
    assert logged.levelno == logging.ERROR and logged.exc_info is not None


# -- the front door alone, with its pauses recorded ---------------------------------------------


class _Stop(threading.Event):
    """The front door's stop event, recording every pause the loop takes on it."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(timeout)
        return super().wait(timeout)


@dataclass
class _Door:
    """A running Gate on loopback whose hand-off takes every caller (no association served)."""

    listening: socket.socket
    stop: _Stop
    counts: Counter[str] = field(default_factory=Counter)
    handed: list[socket.socket] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.listening.getsockname()[1])

    def hand_off(self, sock: socket.socket, peer: tuple[str, int], first: bytes) -> bool:
        self.handed.append(sock)
        return True


@pytest.fixture
def front_door() -> Iterator[Callable[[], _Door]]:
    """Start a Gate (call the fixture) once the test has patched what it needs."""
    made: list[tuple[_Door, socket.socket, socket.socket, threading.Thread]] = []

    def make() -> _Door:
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)
        wake_r, wake_w = socket.socketpair()
        door = _Door(listening, _Stop())
        plan = GatePlan(
            ssl_context=None,
            handshake_timeout=5.0,
            pdu_limits=PduLimits(max_pdata=16384),
            allowed_calling_ae_titles=(),
            admission=AdmissionLimits(),
        )
        gate = Gate(
            listening,
            wake_r,
            plan,
            door.hand_off,
            count=lambda key: door.counts.update([key]),
            logger=logging.getLogger("test.frontdoor"),
            stopping=door.stop,
        )
        thread = threading.Thread(target=gate.run, name="test-front-door", daemon=True)
        thread.start()
        made.append((door, wake_r, wake_w, thread))
        return door

    yield make
    for door, wake_r, wake_w, thread in made:
        door.stop.set()
        wake_w.send(b"x")
        thread.join(10)
        assert not thread.is_alive()
        for sock in (*door.handed, wake_r, wake_w, door.listening):
            sock.close()


def _ask(door: _Door) -> None:
    """A caller sends a well-formed A-ASSOCIATE-RQ; the front door must hand it on."""
    handed = len(door.handed)
    with connect(door.port) as sock:
        sock.sendall(association_rq())
        assert wait_until(lambda: len(door.handed) > handed)


def _failing_accept(
    monkeypatch: pytest.MonkeyPatch, door_socket: Callable[[], socket.socket], errors: list[int]
) -> None:
    """The listening socket's accept() raises OSError with each of ``errors`` first."""
    real_accept = socket.socket.accept

    def accept(sock: socket.socket) -> tuple[socket.socket, object]:
        if sock is door_socket() and errors:
            code = errors.pop(0)
            raise OSError(code, os.strerror(code))
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)


def test_an_accept_error_of_one_caller_does_not_stall_the_front_door(
    front_door: Callable[[], _Door],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.frontdoor")
    doors: list[_Door] = []
    errors = [errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNABORTED]
    _failing_accept(monkeypatch, lambda: doors[0].listening, errors)
    doors.append(front_door())
    _ask(doors[0])
    assert errors == []  # every injected error was met
    assert doors[0].stop.pauses == []  # and none of them paused the loop
    assert doors[0].counts["accept_failed"] == 4
    accept_failed = [r for r in caplog.records if r.getMessage() == "accept failed"]
    assert len(accept_failed) == 4
    assert {r.levelno for r in accept_failed} == {logging.DEBUG}


def test_out_of_descriptors_pauses_accept_and_says_so_once(
    front_door: Callable[[], _Door],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.frontdoor")
    doors: list[_Door] = []
    errors = [errno.EMFILE] * 3
    _failing_accept(monkeypatch, lambda: doors[0].listening, errors)
    doors.append(front_door())
    _ask(doors[0])
    assert doors[0].stop.pauses == [0.1, 0.1, 0.1]  # the caller waits in the backlog meanwhile
    levels = [r.levelno for r in caplog.records if r.getMessage() == "accept failed"]
    assert levels == [logging.ERROR, logging.DEBUG, logging.DEBUG]


def test_an_accept_errno_that_keeps_coming_pauses_and_is_logged_at_error(
    front_door: Callable[[], _Door],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # EPERM from a seccomp policy on every accept: before, 0 pauses, DEBUG only, uncounted.
    caplog.set_level(logging.DEBUG, logger="test.frontdoor")
    doors: list[_Door] = []
    errors = [errno.EPERM] * (ACCEPT_RUN + 3)
    _failing_accept(monkeypatch, lambda: doors[0].listening, errors)
    doors.append(front_door())
    _ask(doors[0])
    assert errors == []
    assert doors[0].stop.pauses == [ACCEPT_PAUSE] * 4  # from the run's 64th on
    assert doors[0].counts["accept_failed"] == ACCEPT_RUN + 3
    levels = [r.levelno for r in caplog.records if r.getMessage() == "accept failed"]
    assert levels.count(logging.ERROR) == 1
    assert levels[ACCEPT_RUN - 1] == logging.ERROR


def test_a_turn_that_fails_again_and_again_backs_off_and_the_loop_carries_on(
    front_door: Callable[[], _Door],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.frontdoor")
    real_next_deadline = PendingTable.next_deadline
    failures = [4]  # every turn starts with next_deadline(): the first four turns fail

    def next_deadline(table: PendingTable[object]) -> float | None:
        if failures[0]:
            failures[0] -= 1
            raise KeyError("a bug in the pending table")
        return real_next_deadline(table)

    monkeypatch.setattr(PendingTable, "next_deadline", next_deadline)
    door = front_door()
    _ask(door)
    assert door.counts["errors"] == 4
    assert door.stop.pauses == [0.05, 0.1, 0.2]  # the same error again: no busy loop
    logged = [r for r in caplog.records if r.getMessage() == "front door error"]
    assert [r.levelno for r in logged] == [logging.ERROR] + [logging.DEBUG] * 3
    assert logged[0].exc_info is not None
