"""The panel's door in asyncio: every TCP connection is counted before its TLS handshake, and
closed when gateway.web.admission says so (deadline passed, or evicted for a newcomer).

uvicorn is given no SSL context, because asyncio would then give each handshake 60 s and nobody
would count the connection until it finished; and uvicorn itself never closes a connection that
sends no first request, and answers 503 to everyone once ``limit_concurrency`` idle connections
are open. Instead uvicorn's protocol class is :class:`DoorProtocol`: on a raw connection it asks
the :class:`~gateway.web.admission.ConnectionTable`, then does the TLS handshake itself
(``loop.start_tls``) and hands the TLS transport to uvicorn's own h11 protocol, which reports
each request's start, its body's bytes and its end back (:class:`_CountedH11`).

A connection the door closes is aborted (no TLS close_notify): a peer that sends nothing would
otherwise hold it through the TLS shutdown too. Everything here runs in the server's event loop
thread; the table needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, cast

import h11
import uvicorn
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from gateway.logsetup import event
from gateway.web.admission import Admission, ConnectionTable, DoorLimits, Phase

TLS_SHUTDOWN_SECONDS = 3.0  # for a closing peer to answer close_notify (asyncio's default: 30)


class DoorConfig(uvicorn.Config):
    """uvicorn's config for the panel: our TLS context and door instead of uvicorn's TLS."""

    def __init__(
        self,
        app: ASGI3Application,
        context: ssl.SSLContext,
        limits: DoorLimits,
        logger: logging.Logger,
        **kwargs: Any,
    ) -> None:
        kwargs["limit_concurrency"] = None  # the door bounds connections, without any 503
        super().__init__(app, http=DoorProtocol, **kwargs)
        self.tls_context = context
        self.door = Door(limits, logger)


class Door:
    """The connection table, the transports it names and their deadline timers."""

    def __init__(self, limits: DoorLimits, logger: logging.Logger) -> None:
        self.table = ConnectionTable(limits)
        self._log = logger
        self._transports: dict[int, asyncio.Transport] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._handshakes: set[asyncio.Task[None]] = set()
        self._crowded_since: float | None = None

    @property
    def limits(self) -> DoorLimits:
        """The limits the table applies."""
        return self.table.limits

    def admit(self, transport: asyncio.Transport) -> int | None:
        """A TCP connection was accepted: its id, or None when it was refused (and closed)."""
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        admission = self.table.admit(host, loop.time())
        for victim in admission.evict:
            self._close(victim, "evicted")
        self._note(admission, loop.time())
        if admission.conn is None:
            transport.abort()
            return None
        self._transports[admission.conn] = transport
        self._arm(admission.conn, Phase.HANDSHAKE)
        return admission.conn

    def started(self, task: asyncio.Task[None]) -> None:
        """Keep a handshake task referenced until it ends (asyncio holds only weak ones)."""
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def enter(self, conn: int, phase: Phase) -> None:
        """``conn`` is now in ``phase``; its deadline timer follows (nothing when unchanged)."""
        if self.table.phase(conn) is not phase:
            self._arm(conn, phase)

    def received(self, conn: int) -> None:
        """Bytes arrived on ``conn``: in BODY, its deadline counts from now. The timer is not
        re-armed for every chunk of an upload; when it fires early, :meth:`_expire` re-arms it."""
        self.table.received(conn, asyncio.get_running_loop().time())

    def release(self, conn: int) -> None:
        """``conn`` was closed by its peer or by the server: forget it."""
        self._forget(conn)

    def handshake_failed(self, conn: int, exc: OSError) -> None:
        """The TLS handshake of ``conn`` failed (bad hello, reset, deadline): forget it."""
        self._log.debug("panel TLS handshake failed: %s", exc)
        self._forget(conn)

    def _arm(self, conn: int, phase: Phase) -> None:
        loop = asyncio.get_running_loop()
        delay = self.table.enter(conn, phase, loop.time())
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        if delay is not None:
            self._timers[conn] = loop.call_later(delay, self._expire, conn)

    def _expire(self, conn: int) -> None:
        loop = asyncio.get_running_loop()
        self._timers.pop(conn, None)
        if self.table.overdue(conn, loop.time()):
            self._close(conn, f"no {self._awaited(conn)} in time")
            return
        left = self.table.remaining(conn, loop.time())  # a body byte came since it was armed
        if left is not None:
            self._timers[conn] = loop.call_later(left, self._expire, conn)

    def _awaited(self, conn: int) -> str:
        phase = self.table.phase(conn)
        if phase is Phase.HANDSHAKE:
            return "TLS handshake"
        return "request body byte" if phase is Phase.BODY else "request"

    def _close(self, conn: int, why: str) -> None:
        transport = self._transports.get(conn)
        self._log.debug("panel connection closed: %s", why)
        self._forget(conn)
        if transport is not None:
            transport.abort()

    def _forget(self, conn: int) -> None:
        self.table.release(conn)
        self._transports.pop(conn, None)
        timer = self._timers.pop(conn, None)
        if timer is not None:
            timer.cancel()
        if self._crowded_since is not None and len(self.table) <= self.limits.total // 2:
            since, self._crowded_since = self._crowded_since, None
            event(
                self._log,
                logging.INFO,
                "panel connections below their limit again",
                seconds=round(asyncio.get_running_loop().time() - since, 1),
            )

    def _note(self, admission: Admission, now: float) -> None:
        """Log the transition into crowding once (WARNING), not every eviction."""
        if not admission.crowded:
            return
        if self._crowded_since is None:
            self._crowded_since = now
            event(
                self._log,
                logging.WARNING,
                "panel connections at their limit: closing the oldest idle ones",
                connections=len(self.table),
                limit=self.limits.total,
                per_address=self.limits.per_address,
            )


class DoorProtocol(asyncio.Protocol):
    """uvicorn's protocol class for the panel: admission, then TLS, then uvicorn's h11."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        assert isinstance(config, DoorConfig)
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        raw.pause_reading()  # the ClientHello is for the TLS layer start_tls puts in between
        door = self._config.door
        conn = door.admit(raw)
        if conn is None:
            return
        self._task = asyncio.get_running_loop().create_task(self._upgrade(raw, conn))
        door.started(self._task)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only while this is still the transport's protocol: closed before start_tls took it.
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _upgrade(self, raw: asyncio.Transport, conn: int) -> None:
        door, config = self._config.door, self._config
        http = _CountedH11(
            conn,
            door,
            config=config,
            server_state=self._server_state,
            app_state=self._app_state,
        )
        try:
            tls = await asyncio.get_running_loop().start_tls(
                raw,
                http,
                config.tls_context,
                server_side=True,
                ssl_handshake_timeout=door.limits.handshake_seconds,
                ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS,
            )
        except OSError as exc:  # ssl.SSLError, a reset, the handshake deadline
            door.handshake_failed(conn, exc)
            return
        except asyncio.CancelledError:
            door.release(conn)
            raise
        if tls is None or tls.is_closing():  # lost just as the handshake ended
            door.release(conn)
            return
        door.enter(conn, Phase.WAITING)
        http.connection_made(tls)


class _CountedH11(H11Protocol):
    """uvicorn's h11 protocol, telling the door when a request starts and when it is answered."""

    def __init__(self, conn: int, door: Door, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._door_id = conn
        self._door = door
        # start_tls hands over the transport only after the handshake, but the TLS layer may
        # already pass on a request that came with the client's last handshake message.
        self._early: bytearray | None = bytearray()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        early, self._early = self._early, None
        if early:
            self.data_received(bytes(early))

    def data_received(self, data: bytes) -> None:
        if self._early is not None:
            self._early += data
            return
        super().data_received(data)  # handle_events: the phase follows h11's state
        self._door.received(self._door_id)

    def handle_events(self) -> None:
        super().handle_events()
        self._track()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track()

    def _track(self) -> None:
        theirs = self.conn.their_state
        if self.conn.our_state is h11.IDLE and theirs is h11.IDLE:
            phase = Phase.WAITING
        elif theirs is h11.SEND_BODY:  # headers in, body still coming (also if answered early)
            phase = Phase.BODY
        else:
            phase = Phase.REQUEST
        self._door.enter(self._door_id, phase)

    def connection_lost(self, exc: Exception | None) -> None:
        self._door.release(self._door_id)
        if self.transport is None:
            return  # lost before _upgrade could hand it the transport
        super().connection_lost(exc)
