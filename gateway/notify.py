"""systemd's notify protocol (READY, STATUS, WATCHDOG, EXTEND_TIMEOUT_USEC, STOPPING, RELOADING).

The protocol is one assignment a line, so a status text is sent as one line whatever it holds
(a destination's pause reason may quote a peer): a line break in it cannot add an assignment.

Rules:

* NOTIFY_SOCKET names a Unix datagram socket: a path, or ``@name`` for the abstract namespace
  (systemd's own convention, read as sd_notify(3) reads it). Messages go out in UTF-8.
* Notifying never stops the gateway. A NOTIFY_SOCKET that cannot be connected (inherited from
  a container or ``sudo -E``, a stale path) is logged once, as ``systemd notification
  disabled``, and the notifier is then disabled (``enabled`` False): every later call does
  nothing. A send that fails once connected (systemd gone while stopping) is dropped.
* A restart in place (the panel's apply: the daemon stops everything and execs the same
  command under the same PID) is a reload to systemd, never a stop: STOPPING=1 would put the
  unit in its stop state, where the new process's READY=1 counts for nothing, and systemd kills
  it at TimeoutStopSec. Before the exec: RELOADING=1, with the watchdog and the state's timeout
  stretched to the restart's allowance (nothing pings while the new process imports and
  starts); the new process's READY=1 carries the unit's own WATCHDOG_USEC back.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from contextlib import suppress

from gateway.logsetup import event
from gateway.textsafe import one_line

log = logging.getLogger("gateway.notify")


def socket_address(value: str) -> str | bytes:
    """The address for ``connect`` that NOTIFY_SOCKET ``value`` names (``@``: abstract)."""
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    return value


def connect(value: str) -> socket.socket:
    """A datagram socket connected to NOTIFY_SOCKET ``value``; raises OSError if it cannot be."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(socket_address(value))
    except BaseException:
        sock.close()
        raise
    return sock


class SystemdNotifier:
    """Sends sd_notify messages when NOTIFY_SOCKET is set; does nothing otherwise.

    ``environ`` (default: the process's) gives NOTIFY_SOCKET and the watchdog interval. The
    socket is connected here; if it cannot be, notification is disabled (module docstring).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._socket: socket.socket | None = None
        if address:
            try:
                self._socket = connect(address)
            except OSError as exc:
                event(
                    log,
                    logging.WARNING,
                    "systemd notification disabled",
                    notify_socket=address,
                    error=str(exc),
                )
        self.enabled = self._socket is not None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        # The unit's WatchdogSec, as systemd passed it (a restart in place stretches it).
        self.watchdog_usec: int | None = (
            int(usec) if usec.isdigit() and int(usec) > 0 and ours else None
        )
        # systemd expects pings at least twice per interval; we ping at a quarter for slack.
        self.watchdog_interval: float | None = (
            None if self.watchdog_usec is None else self.watchdog_usec / 1_000_000 / 4
        )

    def _send(self, message: str) -> None:
        # UTF-8, as sd_notify(3) reads it (sdnotify encoded Latin-1 and silently dropped a
        # message with any other character: a "—" in a reason, an accented AE title).
        if self._socket is not None:
            with suppress(OSError):  # systemd gone (stopping): nothing to tell
                self._socket.sendall(message.encode("utf-8"))

    def ready(self, status: str) -> None:
        """The queue is open and ingest and forwarders run (also after a restart in place)."""
        # The unit's own interval again, should a restart in place have stretched it.
        watchdog = "" if self.watchdog_usec is None else f"\nWATCHDOG_USEC={self.watchdog_usec}"
        self._send(f"READY=1\nSTATUS={one_line(status)}{watchdog}")

    def reloading(self, allowance: float) -> None:
        """A restart in place begins: systemd waits ``allowance`` seconds for READY=1 again.

        The watchdog (only when the unit has one: an override would turn one on) and the
        reload state's timeout are both moved to ``allowance`` from now.
        """
        if allowance <= 0:
            raise ValueError(f"reloading needs a positive allowance, not {allowance}")
        usec = round(allowance * 1_000_000)
        lines = ["RELOADING=1", "STATUS=restarting with the new configuration"]
        if self.watchdog_usec is not None:
            lines.append(f"WATCHDOG_USEC={usec}")
        lines.append(f"EXTEND_TIMEOUT_USEC={usec}")
        self._send("\n".join(lines))

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
        if self._socket is not None:
            self._socket.close()
            self._socket = None
