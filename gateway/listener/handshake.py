"""The first seconds of a connection: TLS handshake and A-ASSOCIATE-RQ, against one deadline.

pynetdicom 3.0.4's server wraps the socket for TLS on its accepting thread, so one peer that
connects and says nothing holds every other TLS caller at the door. Here the handshake runs in
the connection's own thread, and it and the A-ASSOCIATE-RQ must both be done by the deadline.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from contextlib import suppress

from gateway.listener.guard import PduLimits, PeerRefusedError, check_header, read_exact

# A-ASSOCIATE-RJ: result 2 (rejected-transient), source 3 (service-provider, presentation),
# reason 2 (local-limit-exceeded).
BUSY_REJECT = struct.pack(">BBLBBBB", 0x03, 0, 4, 0, 0x02, 0x03, 0x02)


class TlsHandshakeError(OSError):
    """The caller failed the TLS handshake (no certificate, untrusted, wrong version)."""


def start_tls(raw: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    """Wrap ``raw`` for a server-side handshake (no I/O yet; ``raw`` is detached by this)."""
    return context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)


def complete_tls(tls: ssl.SSLSocket, deadline: float) -> None:
    """Run the TLS handshake; it must be done before ``deadline`` (time.monotonic)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PeerRefusedError("timeout", "no time left for the TLS handshake")
    # CPython applies the socket timeout to the whole do_handshake() call, not per read.
    tls.settimeout(remaining)
    try:
        tls.do_handshake()
    except TimeoutError:
        raise PeerRefusedError("timeout", "TLS handshake too slow") from None
    except ssl.SSLError as exc:
        raise TlsHandshakeError(f"TLS handshake failed: {exc.reason or exc}") from None


def read_association_request(sock: socket.socket, limits: PduLimits, deadline: float) -> bytes:
    """The whole A-ASSOCIATE-RQ PDU (header and body), checked before its body is read."""
    header = read_exact(sock, 6, deadline)
    _, length = check_header(header, limits, first=True)
    return header + read_exact(sock, length, deadline)


def send_busy_reject(sock: socket.socket) -> None:
    """Tell the caller we are at our association limit (it may retry), then close."""
    with suppress(OSError):
        sock.settimeout(2.0)
        sock.sendall(BUSY_REJECT)
    close_quietly(sock)


def close_quietly(sock: socket.socket) -> None:
    """Shut down and close, ignoring a peer that is already gone."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
