"""No failure of its own closes the DICOM port: the association slots survive.

An association thread that does not start gives its slot back (else each failure held one for
good and, after ``max_associations`` of them, every caller got "local limit exceeded" until a
restart).
"""

from __future__ import annotations

import logging
import re
import threading

import pytest

from gateway.listener import handshake
from tests.harness import wait_until
from tests.listener.conftest import StartListener
from tests.listener.support import (
    association_rq,
    connect,
    echoscu,
    listener_settings,
    reply,
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
