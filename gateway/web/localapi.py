"""The local API server: the JSON API on a Unix domain socket, for the CLI, scripts and the box.

No network listener: until the web panel (issue 5) brings HTTPS and accounts, the API is served
only on ``<state_dir>/api.sock``, guarded like docker.sock by file permissions: mode 0660, owned
by the daemon's user and group, so the daemon's user and members of its group may connect. The
socket is bound inside a freshly made 0700 folder, given its mode there and only then renamed
into place, so no client can connect while it still has the default mode.

Who calls is known from the kernel (SO_PEERCRED on the connection): the peer's uid, as a user
name, makes the actor ``local:<user>`` written to the audit log (:func:`peer_actor`).

uvicorn runs in one thread (gateway.web.server.UvicornThread, shared with the HTTPS panel) that
:class:`LocalApiServer` starts and joins (``start``/``stop``, a
supervisor service); request handlers run in FastAPI's worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway.logsetup import event
from gateway.web.server import ServerStartError, UvicornThread, uvicorn_config

SOCKET_NAME = "api.sock"
SOCKET_MODE = 0o660
PEER_EXTENSION = "gateway.peer_credentials"  # key in the ASGI scope's "extensions"
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def socket_path(state_dir: Path) -> Path:
    """Where the daemon serves the local API unless configured otherwise."""
    return state_dir / SOCKET_NAME


@dataclass(frozen=True)
class PeerCredentials:
    """The process at the other end of a Unix-socket connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int


def user_name(uid: int) -> str:
    """The login name of ``uid``, or ``uid<N>`` when the system does not know it."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def peer_actor(request: Request) -> str:
    """FastAPI dependency: the caller as ``local:<user>``, from the connection's credentials."""
    extensions = request.scope.get("extensions") or {}
    creds = extensions.get(PEER_EXTENSION)
    if not isinstance(creds, PeerCredentials):
        # Served some other way than by LocalApiServer: nobody to hold to account.
        raise HTTPException(403, "the caller's identity is unknown")
    return f"local:{user_name(creds.uid)}"


class LocalApiError(RuntimeError):
    """The local API could not start (socket path in use or unusable); fix the path or stop
    the other process, then restart the gateway."""


class LocalApiServer:
    """Serves an ASGI app on a Unix socket with mode 0660 from a thread it owns."""

    def __init__(
        self,
        app: ASGIApp,
        path: Path,
        logger: logging.Logger,
        *,
        mode: int = SOCKET_MODE,
        stop_timeout: float = 5.0,
        start_timeout: float = 10.0,
    ) -> None:
        self.path = path
        self._app = app
        self._log = logger
        self._mode = mode
        self._stop_timeout = stop_timeout
        self._start_timeout = start_timeout
        self._thread: UvicornThread | None = None
        self._sock: socket.socket | None = None
        self._inode: tuple[int, int] | None = None

    @property
    def running(self) -> bool:
        """True while the server thread is alive."""
        return self._thread is not None and self._thread.running

    def start(self) -> None:
        """Bind the socket (mode set before it appears at ``path``) and serve until stop()."""
        if self._thread is not None:
            raise RuntimeError("local API already started")
        sock = bind_socket(self.path, self._mode)
        st = self.path.stat()
        self._sock, self._inode = sock, (st.st_dev, st.st_ino)
        config = uvicorn_config(
            self._app,
            self._stop_timeout,
            uds=str(self.path),  # for uvicorn's own messages; the socket is ours, already bound
            http=_PeerCredentialsH11,
        )
        self._thread = UvicornThread(
            config,
            "local-api",
            self._log,
            stop_timeout=self._stop_timeout,
            start_timeout=self._start_timeout,
        )
        try:
            self._thread.start([sock])
        except ServerStartError as exc:
            self.stop()
            raise LocalApiError(f"local API on {self.path}: {exc}") from None
        event(self._log, logging.INFO, "local API listening", socket=str(self.path))

    def stop(self) -> None:
        """Finish requests in progress (within the stop timeout), close and remove the socket."""
        thread = self._thread
        if thread is not None and not thread.stop():
            event(self._log, logging.ERROR, "local API did not stop in time")
        if self._sock is not None:
            self._sock.close()
        self._remove_own_socket()
        self._thread = self._sock = None
        self._inode = None
        if thread is not None:
            event(self._log, logging.INFO, "local API stopped", socket=str(self.path))

    def _remove_own_socket(self) -> None:
        # Only our own inode: a second gateway that took the path over keeps its socket.
        if self._inode is None:
            return
        with contextlib.suppress(FileNotFoundError):
            st = self.path.lstat()
            if (st.st_dev, st.st_ino) == self._inode:
                self.path.unlink()


def bind_socket(path: Path, mode: int = SOCKET_MODE) -> socket.socket:
    """A listening Unix socket at ``path`` that had ``mode`` before anyone could reach it.

    A stale socket left by a crash is replaced; a live one (another process answers) or any
    other kind of file at ``path`` is an error, never removed.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    _clear_stale(path)
    # mkdtemp makes the folder 0700: between bind() and chmod() only our user can reach it.
    private = Path(tempfile.mkdtemp(prefix=".api-", dir=folder))
    staged = private / "s"
    if len(os.fsencode(staged)) > _SUN_PATH_MAX or len(os.fsencode(path)) > _SUN_PATH_MAX:
        private.rmdir()
        raise LocalApiError(f"socket path too long for a Unix socket: {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(staged))
        staged.chmod(mode)
        sock.listen(64)
        # The socket keeps its inode across the rename; clients connect by the new name.
        staged.rename(path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
        raise
    finally:
        private.rmdir()
    return sock


def _clear_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise LocalApiError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # left by a process that is gone
        return
    finally:
        probe.close()
    raise LocalApiError(f"{path} is in use by another process (is a second gateway running?)")


def _read_peer(transport: Any) -> PeerCredentials | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


class _PeerCredentialsH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, adding the peer's credentials to every request's scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        creds = _read_peer(transport)
        if creds is not None:
            self.app = cast(ASGI3Application, _WithPeer(cast(ASGIApp, self.app), creds))


class _WithPeer:
    """ASGI wrapper for one connection: ``scope["extensions"][PEER_EXTENSION] = creds``."""

    def __init__(self, app: ASGIApp, creds: PeerCredentials) -> None:
        self._app = app
        self._creds = creds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = dict(scope.get("extensions") or {})
        extensions[PEER_EXTENSION] = self._creds
        await self._app({**scope, "extensions": extensions}, receive, send)
