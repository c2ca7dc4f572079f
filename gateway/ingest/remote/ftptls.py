"""Explicit FTPS (AUTH TLS, RFC 4217) for pyftpdlib, on Python's own ssl module.

pyftpdlib's TLS handlers are built on pyOpenSSL, whose every release caps the ``cryptography``
version below the one the gateway runs; this mixin does what theirs does
(pyftpdlib.handlers.ftps.ssl) with :mod:`ssl` instead: the handshake, reads and writes on a
non-blocking socket, and the close. It is mixed into the control channel and the data channel
(gateway.ingest.remote.ftp).

How the peer ended a channel is kept in ``ended`` (:class:`DataEnd`): in order (TLS
close_notify; on a plain connection a FIN), *ragged* (TLS without close_notify: OpenSSL 3 reports
a FIN and a reset alike, as an unexpected EOF) or broken (a reset on a plain connection, a TLS
failure). pyftpdlib itself counts a reset as the end of an upload; the receiver must not
(gateway.ingest.remote.ftp.upload_outcome). Python's ssl turns a ragged end into b"" unless
``suppress_ragged_eofs`` is off, which it is here.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import ssl
from typing import Any

from gateway.ingest.remote.pyftpd import _ERRNOS_DISCONNECTED, _ERRNOS_RETRY, _RetryError


class DataEnd(enum.Enum):
    """How the peer ended a connection (data channels record it)."""

    OPEN = "open"  # not ended by the peer (yet): a close from our side, an ABOR, a timeout
    ORDERLY = "orderly"  # TLS close_notify, or a FIN on a plain connection
    RAGGED = "ragged"  # TLS without close_notify: a FIN or a reset, OpenSSL cannot tell which
    BROKEN = "broken"  # reset, or a TLS error mid-stream


class TlsMixin:
    """TLS on a pyftpdlib AsyncChat channel (mix in before FTPHandler or DTPHandler)."""

    # Provided by the pyftpdlib base class the mixin goes with.
    socket: Any
    ioloop: Any
    _wanted_io_events: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tls_requested = False
        self.tls_accepting = False
        self.tls_established = False
        self._tls_closing = False
        self._want_read = False
        self._want_write = False
        self.ended = DataEnd.OPEN

    # --- what the ioloop asks -------------------------------------------------------------------

    def readable(self) -> bool:
        return bool(self.tls_accepting or self._want_read or super().readable())  # type: ignore[misc]

    def writable(self) -> bool:
        return bool(self._want_write or super().writable())  # type: ignore[misc]

    def secure_connection(self, context: ssl.SSLContext) -> None:
        """Start the server side of a TLS handshake on this channel's socket."""
        self.tls_requested = True
        try:
            # suppress_ragged_eofs off: an end without close_notify must be seen as such,
            # not passed off as b"" (ssl's default).
            self.socket = context.wrap_socket(
                self.socket,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=False,
            )
        except OSError:
            self.close()  # the client went away between AUTH and the handshake
            return
        self.tls_accepting = True

    @contextlib.contextmanager
    def _rearm(self) -> Any:
        pending = self._want_read or self._want_write
        yield
        if self._want_read:
            self.modify_ioloop_events(self._wanted_io_events | self.ioloop.READ)
        elif self._want_write:
            self.modify_ioloop_events(self._wanted_io_events | self.ioloop.WRITE)
        elif pending:
            self.modify_ioloop_events(self._wanted_io_events)

    def _handshake(self) -> None:
        self._want_read = self._want_write = False
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self._want_read = True
        except ssl.SSLWantWriteError:
            self._want_write = True
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
            # The client closed before any hello: a data connection it did not use after the
            # command was refused, or a port scan. Nothing to tell it.
            self.tls_accepting = False
            self.ended = DataEnd.BROKEN
            self.close()
        except (ssl.SSLError, OSError):
            self.tls_accepting = False
            self.handle_failed_tls_handshake()
        else:
            self.tls_accepting = False
            self.tls_established = True

    def handle_failed_tls_handshake(self) -> None:
        """The client could not agree on TLS (a version, a cipher, a broken hello)."""
        self.close()

    def handle_read_event(self) -> None:
        if not self.tls_requested:
            super().handle_read_event()  # type: ignore[misc]
            return
        with self._rearm():
            self._want_read = False
            if self.tls_accepting:
                self._handshake()
            elif self._tls_closing:
                self._shutdown()
            else:
                super().handle_read_event()  # type: ignore[misc]

    def handle_write_event(self) -> None:
        if not self.tls_requested:
            super().handle_write_event()  # type: ignore[misc]
            return
        with self._rearm():
            self._want_write = False
            if self.tls_accepting:
                self._handshake()
            elif self._tls_closing:
                self._shutdown()
            else:
                super().handle_write_event()  # type: ignore[misc]

    # --- the stream -----------------------------------------------------------------------------

    def send(self, data: bytes) -> int:
        try:
            return int(self.socket.send(bytes(data)))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            self._want_read = isinstance(exc, ssl.SSLWantReadError)
            self._want_write = not self._want_read
            return 0
        except OSError as exc:
            if exc.errno in _ERRNOS_RETRY:
                return 0
            if exc.errno in _ERRNOS_DISCONNECTED or isinstance(exc, ssl.SSLError):
                self.ended = DataEnd.BROKEN
                self.handle_close()
                return 0
            raise

    def recv(self, buffer_size: int) -> bytes:
        try:
            data = self.socket.recv(buffer_size)
        except ssl.SSLWantReadError as exc:
            self._want_read = True
            raise _RetryError from exc
        except ssl.SSLWantWriteError as exc:
            self._want_write = True
            raise _RetryError from exc
        except ssl.SSLZeroReturnError:
            return self._peer_ended(DataEnd.ORDERLY)  # close_notify
        except ssl.SSLEOFError:
            return self._peer_ended(DataEnd.RAGGED)  # a FIN or a reset without close_notify
        except OSError as exc:
            if exc.errno in _ERRNOS_RETRY:
                raise _RetryError from exc
            if exc.errno in _ERRNOS_DISCONNECTED or isinstance(exc, ssl.SSLError):
                return self._peer_ended(DataEnd.BROKEN)
            raise
        if not data:
            return self._peer_ended(DataEnd.ORDERLY)
        return bytes(data)

    def _peer_ended(self, how: DataEnd) -> bytes:
        if self.ended is DataEnd.OPEN:
            self.ended = how
        self.handle_close()
        return b""

    # --- the end ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Send our close_notify, then close; the peer's close_notify is not waited for."""
        self._tls_closing = True
        try:
            self.socket.unwrap()
        except ssl.SSLWantWriteError:
            self._want_write = True
            return  # ours is not out yet: again when the socket can be written
        except ssl.SSLWantReadError:
            pass  # ours is out; the peer's answer does not matter to us
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return
        self._tls_closing = False
        self.tls_established = False
        super().close()  # type: ignore[misc]

    def close(self) -> None:
        if self.tls_established and not self._tls_closing and self.ended is not DataEnd.BROKEN:
            self._shutdown()
            return
        # Not under TLS, broken, or asked again while our close_notify waits: close now.
        self.tls_accepting = self.tls_established = self._tls_closing = False
        super().close()  # type: ignore[misc]

    # Provided by the base class.
    def modify_ioloop_events(self, events: Any, logdebug: bool = False) -> None:
        super().modify_ioloop_events(events, logdebug)  # type: ignore[misc]

    def handle_close(self) -> None:
        super().handle_close()  # type: ignore[misc]
