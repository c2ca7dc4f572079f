"""The systemd notify protocol over a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from gateway.notify import SystemdNotifier


def test_messages_reach_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})
        assert notifier.watchdog_interval == 0.5
        notifier.ready("東京-pacs: 0 queued")  # UTF-8, as systemd reads it
        notifier.status("pacs: 3 queued")
        notifier.status("pacs paused: peer said\nREADY=1\u2028x")  # a reason quoting a peer
        notifier.watchdog()
        notifier.stopping()
        got = [server.recv(4096).decode() for _ in range(5)]
        notifier.close()
    finally:
        server.close()
    assert got == [
        "READY=1\nSTATUS=東京-pacs: 0 queued",
        "STATUS=pacs: 3 queued",
        "STATUS=pacs paused: peer said\\u000aREADY=1\\u2028x",  # one line: no second READY
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_a_status_with_characters_outside_latin_1_is_sent_in_utf_8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sdnotify encodes Latin-1 and silently dropped such a STATUS= (found with issue 11's
    # "PACS rejected our AE title: ... — ask the PACS administrator ..." reason).
    path = tmp_path / "notify.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        notifier.status("pacs rejected: AE title not recognised — ask the PACS administrator")
        got = server.recv(4096).decode("utf-8")
        notifier.close()
    finally:
        server.close()
    assert got == "STATUS=pacs rejected: AE title not recognised — ask the PACS administrator"


def test_watchdog_for_another_pid_is_ignored() -> None:
    notifier = SystemdNotifier(
        {
            "NOTIFY_SOCKET": "",
            "WATCHDOG_USEC": "1000000",
            "WATCHDOG_PID": str(os.getpid() + 1),
        }
    )
    assert notifier.watchdog_interval is None


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    notifier.ready("x")  # must not raise
