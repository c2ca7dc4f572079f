"""systemd's notify protocol (READY, STATUS, WATCHDOG, EXTEND_TIMEOUT_USEC, STOPPING).

The protocol is one assignment a line, so a status text is sent as one line whatever it holds
(a destination's pause reason may quote a peer): a line break in it cannot add an assignment.
"""

from __future__ import annotations

import os
from contextlib import suppress

import sdnotify

from gateway.textsafe import one_line


class SystemdNotifier:
    """Sends sd_notify messages when NOTIFY_SOCKET is set; does nothing otherwise.

    ``environ`` decides whether to notify and the watchdog interval; sdnotify itself always
    connects to the process's own $NOTIFY_SOCKET.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        # systemd expects pings at least twice per interval; we ping at a quarter for slack.
        self.watchdog_interval: float | None = (
            int(usec) / 1_000_000 / 4 if usec.isdigit() and int(usec) > 0 and ours else None
        )

    def _send(self, message: str) -> None:
        # UTF-8, as sd_notify(3) reads it: sdnotify's notify() encodes Latin-1 and drops the
        # whole message, silently, on the first other character (a "—" in a reason, an
        # accented AE title), so the status line went stale instead.
        if self._notifier is not None:
            with suppress(OSError):  # systemd gone (stopping): nothing to tell
                self._notifier.socket.sendall(message.encode("utf-8"))

    def ready(self, status: str) -> None:
        """The queue is open and ingest and forwarders run."""
        self._send(f"READY=1\nSTATUS={one_line(status)}")

    def status(self, text: str) -> None:
        """A one-line summary for `systemctl status`."""
        self._send(f"STATUS={one_line(text)}")

    def watchdog(self) -> None:
        """The main loop is alive."""
        self._send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd for ``seconds`` more before it gives up on the current start or stop.

        Call it before each slow step of start-up (queue recovery, a schema migration), with
        what that step may need: systemd moves its deadline to now + ``seconds`` if that is
        later (it never shortens it). Without NOTIFY_SOCKET nothing happens.
        """
        if seconds <= 0:
            raise ValueError(f"extend_timeout needs a positive number of seconds, not {seconds}")
        self._send(f"EXTEND_TIMEOUT_USEC={round(seconds * 1_000_000)}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    def close(self) -> None:
        """Close the datagram socket."""
        sock = getattr(self._notifier, "socket", None)
        if sock is not None:
            sock.close()
