"""Bounds on what a peer can make us read, checked from the PDU framing before a body is read.

pynetdicom 3.0.4 reads a PDU's 6-byte header (type, reserved, length) and then reads as many
bytes as the length says, with no check against the negotiated maximum; its DIMSE layer then
gathers command sets and (for everything but a chunked C-STORE) data sets in memory without a
bound. ``GuardedSocket`` takes pynetdicom's place at the socket: it refuses a declared length
over the limit for its PDU type, reads a PDU's body in bounded chunks against one deadline
(a peer trickling bytes is dropped), and follows the PDVs of P-DATA to bound a command set and
an in-memory data set. A refused peer gets an A-ABORT and the connection is closed.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.forward.link import ClosingAssociationSocket

if TYPE_CHECKING:
    from pynetdicom.association import Association

ASSOCIATION_PDU_LIMIT = 256 * 1024  # A-ASSOCIATE-RQ with 128 contexts and user identity fits
PDATA_SLACK = 16  # some peers count the PDV header outside the negotiated maximum
COMMAND_LIMIT = 64 * 1024  # a command set is a few hundred bytes
IN_MEMORY_DATASET_LIMIT = 1024 * 1024  # C-FIND identifiers and the like; C-STORE goes to disk
RECV_CHUNK = 64 * 1024

A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
_PDU_TYPES = range(0x01, 0x08)
_C_STORE_RQ = 0x0001
# A-ABORT, source 2 (service-provider), reason 6 (invalid PDU parameter value).
ABORT_INVALID_PARAMETER = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06))


class PeerRefusedError(OSError):
    """The peer broke a bound (``kind``: oversize, malformed, timeout, closed); drop it.

    An OSError, so that pynetdicom's DUL treats it as a closed transport connection.
    """

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class PduLimits:
    """The largest PDU per type and the largest message parts kept in memory, in bytes."""

    max_pdata: int  # our negotiated Maximum Length Received
    association: int = ASSOCIATION_PDU_LIMIT
    command: int = COMMAND_LIMIT
    dataset_in_memory: int = IN_MEMORY_DATASET_LIMIT
    store_streams_to_disk: bool = True  # pynetdicom writes C-STORE data sets to a file


def check_header(header: bytes, limits: PduLimits, *, first: bool = False) -> tuple[int, int]:
    """The (type, length) of a PDU header; PeerRefusedError when it must not be read further."""
    if len(header) != 6:
        raise PeerRefusedError("closed", "connection closed inside a PDU header")
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in _PDU_TYPES:
        raise PeerRefusedError("malformed", f"unknown PDU type 0x{pdu_type:02X}")
    if first and pdu_type != A_ASSOCIATE_RQ:
        raise PeerRefusedError("malformed", f"PDU type 0x{pdu_type:02X} before A-ASSOCIATE-RQ")
    limit = limits.max_pdata + PDATA_SLACK if pdu_type == P_DATA_TF else limits.association
    if length > limit:
        raise PeerRefusedError(
            "oversize", f"PDU type 0x{pdu_type:02X} declares {length} bytes, limit {limit}"
        )
    return pdu_type, length


def read_exact(sock: socket.socket, count: int, deadline: float) -> bytes:
    """Exactly ``count`` bytes, in bounded chunks, all before ``deadline`` (time.monotonic)."""
    data = bytearray()
    while len(data) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PeerRefusedError("timeout", "peer too slow")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(RECV_CHUNK, count - len(data)))
        except TimeoutError:
            raise PeerRefusedError("timeout", "peer too slow") from None
        if not chunk:
            raise PeerRefusedError("closed", "connection closed inside a PDU")
        data += chunk
    return bytes(data)


class MessageBudget:
    """Follows the PDVs of P-DATA-TF bodies and bounds what pynetdicom keeps in memory."""

    def __init__(self, limits: PduLimits) -> None:
        self._limits = limits
        self._command = bytearray()
        self._dataset_bytes = 0
        self._streamed = False

    def feed(self, body: bytes) -> None:
        """Account for one P-DATA-TF body; PeerRefusedError if malformed or over a bound."""
        offset = 0
        while offset < len(body):
            if offset + 4 > len(body):
                raise PeerRefusedError("malformed", "truncated PDV item")
            (length,) = struct.unpack_from(">L", body, offset)
            if length < 2 or offset + 4 + length > len(body):
                raise PeerRefusedError("malformed", "PDV item length outside its PDU")
            control = body[offset + 5]
            fragment = body[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if control & 0x01:
                self._command_fragment(fragment, last=bool(control & 0x02))
            else:
                self._dataset_fragment(len(fragment), last=bool(control & 0x02))

    def _command_fragment(self, fragment: bytes, *, last: bool) -> None:
        if len(self._command) + len(fragment) > self._limits.command:
            raise PeerRefusedError("oversize", "command set over its limit")
        self._command += fragment
        if last:
            field = command_field(bytes(self._command))
            self._streamed = field == _C_STORE_RQ and self._limits.store_streams_to_disk
            self._command.clear()
            self._dataset_bytes = 0

    def _dataset_fragment(self, size: int, *, last: bool) -> None:
        if not self._streamed:
            self._dataset_bytes += size
            if self._dataset_bytes > self._limits.dataset_in_memory:
                raise PeerRefusedError("oversize", "data set over the in-memory limit")
        if last:
            self._dataset_bytes = 0


def command_field(command: bytes) -> int | None:
    """(0000,0100) Command Field of an encoded command set (Implicit VR LE), if present."""
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, offset)
        offset += 8
        if (group, element) == (0x0000, 0x0100) and length == 2 and offset + 2 <= len(command):
            return int(struct.unpack_from("<H", command, offset)[0])
        if group != 0x0000:
            return None
        offset += length
    return None


class GuardedSocket(ClosingAssociationSocket):
    """pynetdicom's socket wrapper, reading PDUs only within the bounds of ``limits``.

    ``first_pdu`` is the A-ASSOCIATE-RQ already read (and checked) during the handshake; it is
    served first. Any later PDU must arrive whole within ``pdu_timeout`` of its first byte.
    """

    def __init__(
        self,
        assoc: Association,
        sock: socket.socket,
        first_pdu: bytes,
        limits: PduLimits,
        pdu_timeout: float,
        on_refused: Callable[[PeerRefusedError], None],
    ) -> None:
        super().__init__(assoc, client_socket=sock)
        self._pending = bytearray(first_pdu)
        self._limits = limits
        self._pdu_timeout = pdu_timeout
        self._on_refused = on_refused
        self._budget = MessageBudget(limits)
        self._body_type: int | None = None
        self._body_length = 0
        self._deadline = 0.0
        sock.settimeout(pdu_timeout)

    @property
    def ready(self) -> bool:
        """True when a PDU (or the rest of the prefetched one) can be read."""
        return bool(self._pending) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        """Serve pynetdicom's two reads per PDU: the 6-byte header, then the body."""
        if self._pending:
            out = self._pending[:nr_bytes]
            del self._pending[:nr_bytes]
            return out
        sock = self.socket
        if sock is None:
            raise PeerRefusedError("closed", "socket already closed")
        try:
            return bytearray(self._read(sock, nr_bytes))
        except PeerRefusedError as exc:
            self._refuse(sock, exc)
            raise
        finally:
            with suppress(OSError):
                sock.settimeout(self._pdu_timeout)  # sends get the full timeout again

    def _read(self, sock: socket.socket, nr_bytes: int) -> bytes:
        if self._body_type is None:
            if nr_bytes != 6:
                raise PeerRefusedError("malformed", "read outside PDU framing")
            self._deadline = time.monotonic() + self._pdu_timeout
            header = read_exact(sock, 6, self._deadline)
            self._body_type, self._body_length = check_header(header, self._limits)
            return header
        if nr_bytes != self._body_length:
            raise PeerRefusedError("malformed", "read outside PDU framing")
        pdu_type, self._body_type = self._body_type, None
        body = read_exact(sock, nr_bytes, self._deadline)
        if pdu_type == P_DATA_TF:
            self._budget.feed(body)
        return body

    def _refuse(self, sock: socket.socket, exc: PeerRefusedError) -> None:
        self._on_refused(exc)
        if exc.kind in ("oversize", "malformed"):
            with suppress(OSError):
                sock.settimeout(1.0)
                sock.sendall(ABORT_INVALID_PARAMETER)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
