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
        # The unit's own interval with READY=1: a restart in place may have stretched it.
        "READY=1\nSTATUS=東京-pacs: 0 queued\nWATCHDOG_USEC=2000000",
        "STATUS=pacs: 3 queued",
        "STATUS=pacs paused: peer said\\u000aREADY=1\\u2028x",  # one line: no second READY
        "WATCHDOG=1",
        "STOPPING=1",
    ]


@pytest.mark.parametrize(
    ("watchdog", "expected"),
    [
        (
            "30000000",
            "RELOADING=1\nSTATUS=restarting with the new configuration\n"
            "WATCHDOG_USEC=300000000\nEXTEND_TIMEOUT_USEC=300000000",
        ),
        # No watchdog in the unit: an override would turn one on.
        (
            "",
            "RELOADING=1\nSTATUS=restarting with the new configuration\n"
            "EXTEND_TIMEOUT_USEC=300000000",
        ),
    ],
)
def test_a_restart_in_place_is_a_reload_with_the_watchdog_stretched(
    tmp_path: Path, watchdog: str, expected: str
) -> None:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": watchdog})
        notifier.reloading(300)
        got = server.recv(4096).decode()
        notifier.ready("pacs: 0 queued")
        ready = server.recv(4096).decode()
        notifier.close()
    finally:
        server.close()
    assert got == expected
    assert ready == "READY=1\nSTATUS=pacs: 0 queued" + (
        f"\nWATCHDOG_USEC={watchdog}" if watchdog else ""
    )
    with pytest.raises(ValueError):
        notifier.reloading(0)


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


@pytest.mark.parametrize("address", ["/nonexistent/notify", "@gateway-test-nobody-listens"])
def test_a_notify_socket_that_cannot_be_connected_disables_notification(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A stale NOTIFY_SOCKET (a container, sudo -E): ready() raised AttributeError and the
    # daemon stopped at READY. Logged once, then nothing is sent and nothing raises.
    with caplog.at_level("WARNING", logger="gateway.notify"):
        notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
        notifier.ready("up")
        notifier.status("pacs: 0 queued")
        notifier.watchdog()
        notifier.extend_timeout(5)
        notifier.stopping()
        notifier.close()
    assert not notifier.enabled
    disabled = [r for r in caplog.records if r.getMessage() == "systemd notification disabled"]
    assert len(disabled) == 1
    assert disabled[0].__dict__["notify_socket"] == address


def test_an_abstract_notify_socket_is_reached() -> None:
    # "@name" is the abstract namespace (systemd's convention, as sd_notify(3) reads it).
    name = f"gateway-test-notify-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(2)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": f"@{name}"})
        assert notifier.enabled
        notifier.ready("up")
        got = server.recv(4096).decode()
        notifier.close()
    finally:
        server.close()
    assert got == "READY=1\nSTATUS=up"
