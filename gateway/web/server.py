"""uvicorn in a thread the gateway owns: the HTTPS panel here, the local API (localapi.py) too.

:class:`UvicornThread` runs one ``uvicorn.Server`` on sockets bound beforehand (so the caller
decides address, permissions and TLS), waits for it to be serving, and stops it within a
deadline. :class:`WebServer` is the panel's HTTPS listener on it: TLS 1.2 or newer with the
BCP 195 suites (as gateway.forward.tlsctx), no plain-HTTP listener at all, and every connection
counted and given deadlines from its accept on (gateway.web.door, gateway.web.admission), so
idle or half-open connections cannot close the panel to everyone.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn._types import ASGI3Application

from gateway.forward.tlsctx import BCP195_TLS12_CIPHERS
from gateway.logsetup import event
from gateway.web.admission import DoorLimits
from gateway.web.door import DoorConfig

MAX_CONNECTIONS = 32  # local API: beyond it uvicorn answers 503 (the panel has its door)
MAX_HEADER_BYTES = 16 * 1024


class ServerStartError(RuntimeError):
    """The server could not start (address in use, bad certificate): fix it, then restart."""


def uvicorn_settings(stop_timeout: float, **overrides: Any) -> dict[str, Any]:
    """The settings both servers share: no access log (paths may carry an accession number),
    no server header, no proxy headers, bounded connections and header size."""
    settings: dict[str, Any] = {
        "ws": "none",
        "lifespan": "off",
        "loop": "asyncio",
        "log_config": None,  # the gateway's logging stays as configured
        "log_level": "warning",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "date_header": True,
        "limit_concurrency": MAX_CONNECTIONS,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": max(1, int(stop_timeout)),
    }
    settings.update(overrides)
    return settings


def uvicorn_config(app: ASGIApp, stop_timeout: float, **overrides: Any) -> uvicorn.Config:
    """A plain uvicorn config with the shared settings (the local API's)."""
    settings = uvicorn_settings(stop_timeout, **overrides)
    return uvicorn.Config(cast(ASGI3Application, app), **settings)


class UvicornThread:
    """One uvicorn server on given sockets, in a thread this object starts and joins."""

    def __init__(
        self,
        config: uvicorn.Config,
        name: str,
        logger: logging.Logger,
        *,
        stop_timeout: float = 5.0,
        start_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._config = config
        self._log = logger
        self._stop_timeout = stop_timeout
        self._start_timeout = start_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        """True while the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, sockets: list[socket.socket]) -> None:
        """Serve on ``sockets`` until stop(); ServerStartError if it is not serving in time."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        server = uvicorn.Server(self._config)
        self._server = server
        self._error = None
        self._thread = threading.Thread(
            target=self._serve, args=(server, sockets), name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            reason = repr(self._error) if self._error else "timed out"
            self.stop()
            raise ServerStartError(f"{self.name} did not start: {reason}")

    def _serve(self, server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        try:
            server.run(sockets=sockets)
        except BaseException as exc:  # noqa: BLE001 - seen by start() and logged, not lost
            self._error = exc
            self._log.exception("%s failed", self.name)

    def stop(self) -> bool:
        """Finish requests in progress within the stop timeout; False if it had to be abandoned."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return True
        server.should_exit = True
        thread.join(self._stop_timeout + 1.0)
        if thread.is_alive():
            server.force_exit = True
            thread.join(2.0)
        if thread.is_alive():
            event(self._log, logging.ERROR, "server did not stop in time", server=self.name)
            return False
        return True


def panel_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Server-side TLS for the panel: 1.2 or newer, BCP 195 suites, no client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_TICKET
    )
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        raise ServerStartError(f"web certificate {cert} / key {key}: {exc}") from None
    return context


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (``::`` also takes IPv4; port 0: any free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"cannot listen on {host} port {port}: {exc}") from None
    return sock


class WebServer:
    """The panel over HTTPS on ``host``:``port``; start()/stop() for the supervisor."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        context: ssl.SSLContext,
        logger: logging.Logger,
        *,
        stop_timeout: float = 5.0,
        limits: DoorLimits | None = None,
    ) -> None:
        self.host = host
        self.port = port  # the bound port once started (port 0 picks a free one)
        self._log = logger
        config = DoorConfig(
            cast(ASGI3Application, app),
            context,
            limits or DoorLimits(),
            logger,
            **uvicorn_settings(stop_timeout),
        )
        self._thread = UvicornThread(config, "web-panel", logger, stop_timeout=stop_timeout)
        self._sock: socket.socket | None = None

    @property
    def running(self) -> bool:
        """True while the server thread is alive."""
        return self._thread.running

    @property
    def url(self) -> str:
        """Where a browser on this box reaches the panel."""
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)  # noqa: S104
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"https://{host}:{self.port}/"

    def start(self) -> None:
        """Bind and serve; ServerStartError when the port or the certificate is unusable."""
        sock = bind_tcp(self.host, self.port)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        try:
            self._thread.start([sock])
        except ServerStartError:
            sock.close()
            self._sock = None
            raise
        event(self._log, logging.INFO, "web panel listening", address=self.host, port=self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        was_running = self._sock is not None
        self._thread.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if was_running:
            event(self._log, logging.INFO, "web panel stopped", port=self.port)
