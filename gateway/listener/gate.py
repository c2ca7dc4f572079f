"""The listener's front door: every connection, until it has asked well, in one thread.

One selector thread accepts, and takes each connection on a non-blocking socket through its
pre-authentication phase: the TLS handshake (with the client certificate verified), then the
A-ASSOCIATE-RQ, its header checked before its body is read and its body checked by
``handshake.py`` (well-formed, calling AE title allowed). Only a connection that has done all
that is handed to the listener (``hand_off``), which gives it an association slot and a thread,
or answers A-ASSOCIATE-RJ "local limit exceeded" when all are taken. An idle socket, a TLS
ClientHello left hanging or a request trickled byte by byte therefore costs a socket and a few
kilobytes here, never a thread or a slot, and delays nobody.

What stays pending is decided by :class:`~gateway.listener.admission.PendingTable` (deadline
``handshake_timeout`` from accept, limits per address, per IPv6 /64 and in all, eviction when
full). A caller
that hangs up is forgotten as soon as its end of file is read. A refused request gets its answer
(A-ABORT, or A-ASSOCIATE-RJ), then the connection is closed after the caller has hung up or
after ``ARTIM`` seconds, whichever comes first, as PS3.8's ARTIM timer has it (closing at once,
with the caller's bytes unread, would send a TCP reset that can destroy the answer).

No error ends the loop: were this thread to end, the port would stay open and every caller hang.
An error in one turn is counted and logged, and the next turn runs; what accept() errors mean,
and when the loop pauses rather than spin, is in :mod:`~gateway.listener.faults`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.contextlog import log_request
from gateway.listener import handshake
from gateway.listener.admission import AdmissionLimits, PendingTable
from gateway.listener.faults import AcceptFaults, Faults, signature
from gateway.listener.guard import (
    ABORT_INVALID_PARAMETER,
    RECV_CHUNK,
    PduLimits,
    PeerRefusedError,
    check_header,
)
from gateway.logsetup import event
from gateway.netaddr import address_key, host_address

ARTIM = 1.0  # seconds a refused caller gets to read our answer and hang up
LINGER_BYTES = 256 * 1024  # read and dropped while closing, at most: then the reset it is
ACCEPT_BATCH = 64  # connections accepted per wake-up, so that those pending get their turn
CROWD_LOG_INTERVAL = 60.0  # refusals for want of room: one WARNING per interval, DEBUG between

Peer = tuple[str, int]
# The listener takes a connection that has asked well: True when it did (it owns the socket
# from then on), False when every association slot is taken.
HandOff = Callable[[socket.socket, Peer, bytes], bool]
Count = Callable[[str], None]


class _Phase(enum.Enum):
    TLS = "TLS handshake"
    HEADER = "A-ASSOCIATE-RQ header"
    BODY = "A-ASSOCIATE-RQ"
    CLOSING = "closing"


@dataclass(eq=False)
class _Door:
    """One pending connection; its identity is its key in the table."""

    sock: socket.socket
    peer: Peer
    phase: _Phase
    data: bytearray = field(default_factory=bytearray)
    need: int = 6  # bytes still wanted of the current part (header, then body)
    pdu_type: int = 0
    dropped: int = 0  # bytes read and discarded while closing


@dataclass(frozen=True)
class GatePlan:
    """What the front door needs to know about the listener it serves."""

    ssl_context: ssl.SSLContext | None
    handshake_timeout: float
    pdu_limits: PduLimits
    allowed_calling_ae_titles: Sequence[str]
    admission: AdmissionLimits


class Gate:
    """Runs the accept loop (``run`` in its own thread) until ``stopping`` is set."""

    def __init__(
        self,
        listening: socket.socket,
        wake: socket.socket,
        plan: GatePlan,
        hand_off: HandOff,
        *,
        count: Count,
        logger: logging.Logger,
        stopping: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listening = listening
        self._wake = wake
        self._plan = plan
        self._hand_off = hand_off
        self._count = count
        self._log = logger
        self._stopping = stopping
        self._clock = clock
        self._table: PendingTable[_Door] = PendingTable(plan.admission, plan.handshake_timeout)
        self._doors: set[_Door] = set()
        self._selector = selectors.DefaultSelector()
        self._crowd_logged_at = float("-inf")
        self._crowd_unlogged = 0
        self._faults = Faults()  # of the loop's turns
        self._accept_faults = AcceptFaults()  # of accept()

    def pending(self) -> int:
        """Connections in their pre-authentication phase now (closing ones included)."""
        return len(self._doors)

    def run(self) -> None:
        """The loop; on stop every pending connection is closed before it returns."""
        selector = self._selector
        selector.register(self._listening, selectors.EVENT_READ)
        selector.register(self._wake, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                try:
                    self._turn()
                except Exception as exc:  # noqa: BLE001 - nothing may end the front door: faults.py
                    self._turn_failed(exc)
                else:
                    self._faults.succeeded()
        finally:
            for door in list(self._doors):
                self._close(door)
            selector.close()

    # -- the loop's parts ---------------------------------------------------------------------

    def _turn(self) -> None:
        for key, _ in self._selector.select(self._timeout()):
            if key.fileobj is self._listening:
                self._accept_some()
            elif isinstance(key.data, _Door) and key.data in self._doors:
                self._step(key.data)
        self._expire()

    def _turn_failed(self, exc: Exception) -> None:
        """Count and log a failed turn, and pause if it failed as the one before (faults.py)."""
        self._count("errors")
        fault = self._faults.failed(signature(exc), self._clock())
        self._log.log(
            logging.ERROR if fault.loud else logging.DEBUG,
            "front door error",
            exc_info=exc if fault.loud else None,
            extra={"error": f"{type(exc).__name__}: {exc}", "streak": fault.streak},
        )
        if fault.pause:
            self._stopping.wait(fault.pause)

    def _timeout(self) -> float | None:
        deadline = self._table.next_deadline()
        return None if deadline is None else max(0.0, deadline - self._clock())

    def _accept_some(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                raw, address = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._count("accept_failed")
                fault = self._accept_faults.failed(exc.errno, self._clock())
                level = logging.ERROR if fault.loud else logging.DEBUG
                event(self._log, level, "accept failed", error=str(exc), run=fault.run)
                if not fault.pause:  # that caller's: take the next one now
                    continue
                # Out of descriptors or memory, or an errno that keeps coming (faults.py): the
                # caller waits in the backlog; serve those we have and try again shortly.
                self._stopping.wait(fault.pause)
                return
            self._accept_faults.succeeded()
            try:
                self._admit(raw, (str(address[0]), int(address[1])))
            except Exception:
                # A bug, or an error of wrap_socket's that is not the caller's: this caller is
                # closed; the loop's guard logs the error and the next turn takes the next one.
                handshake.close_quietly(raw)
                raise

    def _admit(self, raw: socket.socket, peer: Peer) -> None:
        raw.setblocking(False)
        # Short answers (C-ECHO, a few C-FIND matches) must not wait for the peer's delayed ACK.
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self._plan.ssl_context
        door = _Door(raw, peer, _Phase.TLS if context is not None else _Phase.HEADER)
        verdict = self._table.admit(
            door, host_address(peer[0]), self._clock(), group=address_key(peer[0])
        )
        if not verdict.admitted:
            self._crowded(peer)
            handshake.close_quietly(raw)
            return
        try:
            self._open(door, verdict.evicted, context)
        except Exception:
            self._close(door)  # its place in the table is given back
            raise

    def _open(self, door: _Door, evicted: _Door | None, context: ssl.SSLContext | None) -> None:
        """Take an admitted caller in: close the one it displaces, start its TLS handshake."""
        if evicted is not None:
            self._crowded(evicted.peer)
            self._close(evicted)
        self._count("accepted")
        if context is not None:
            try:
                door.sock = handshake.start_tls(door.sock, context)
            except OSError:  # the caller reset the connection already
                self._close(door)
                return
        self._doors.add(door)
        self._selector.register(door.sock, selectors.EVENT_READ, door)

    def _step(self, door: _Door) -> None:
        try:
            if door.phase is _Phase.TLS:
                self._tls(door)
            if door.phase in (_Phase.HEADER, _Phase.BODY):
                self._read(door)
            elif door.phase is _Phase.CLOSING:
                self._drain(door)
        except PeerRefusedError as exc:
            self._refused(door, exc)
        except ssl.SSLWantWriteError:
            self._want(door, selectors.EVENT_WRITE)
        except ssl.SSLWantReadError:
            self._want(door, selectors.EVENT_READ)
        except BlockingIOError:  # a plain socket with nothing more to read for now
            return
        except OSError as exc:
            if door.phase is not _Phase.CLOSING:
                event(self._log, logging.INFO, "connection lost", error=type(exc).__name__)
            self._close(door)
        except Exception:  # noqa: BLE001 - a bug here must not take the front door down
            self._log.exception("pending connection failed")
            self._count("errors")
            self._close(door)

    def _tls(self, door: _Door) -> None:
        tls = door.sock
        assert isinstance(tls, ssl.SSLSocket)
        try:
            tls.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self._count("tls_failed")
            reason = f"TLS handshake failed: {exc.reason or exc}"
            event(self._log, logging.WARNING, "TLS handshake failed", reason=reason)
            self._close(door)
            return
        door.phase = _Phase.HEADER
        self._want(door, selectors.EVENT_READ)

    def _read(self, door: _Door) -> None:
        """Read what the current part still needs; a TLS socket may hold more than select saw."""
        while door.need:
            chunk = door.sock.recv(min(RECV_CHUNK, door.need))
            if not chunk:  # the caller has gone: forget it now
                self._close(door)
                return
            door.data += chunk
            door.need -= len(chunk)
            if door.need == 0 and door.phase is _Phase.HEADER:
                door.pdu_type = door.data[0]
                _, door.need = check_header(bytes(door.data), self._plan.pdu_limits, first=True)
                door.phase = _Phase.BODY
        self._asked(door)

    def _asked(self, door: _Door) -> None:
        """A whole A-ASSOCIATE-RQ is in: refuse it, hand it on, or say we are full."""
        pdu = bytes(door.data)
        primitive = handshake.parse_association_request(pdu)
        if not handshake.calling_ae_allowed(primitive, self._plan.allowed_calling_ae_titles):
            self._count("rejected")
            calling = handshake.calling_ae(primitive)
            event(self._log, logging.WARNING, "association rejected", calling_ae=calling)
            log_request(self._log, primitive, "listener")
            self._answer(door, handshake.CALLING_AE_REJECT)
            return
        self._selector.unregister(door.sock)
        door.sock.setblocking(True)
        if self._hand_off(door.sock, door.peer, pdu):
            self._table.remove(door)
            self._doors.discard(door)
            return
        door.sock.setblocking(False)
        self._selector.register(door.sock, selectors.EVENT_READ, door)
        self._count("refused_busy")
        event(self._log, logging.WARNING, "association refused: at limit")
        log_request(self._log, primitive, "listener")
        self._answer(door, handshake.BUSY_REJECT)

    def _refused(self, door: _Door, exc: PeerRefusedError) -> None:
        if exc.kind == "closed":
            self._close(door)
            return
        self._count("timed_out" if exc.kind == "timeout" else f"refused_{exc.kind}")
        event(self._log, logging.WARNING, "peer dropped", kind=exc.kind, reason=exc.detail)
        if exc.kind in ("oversize", "malformed") and door.pdu_type != handshake.A_ABORT:
            self._answer(door, ABORT_INVALID_PARAMETER)  # PS3.8 AA-1
        else:
            self._close(door)

    def _answer(self, door: _Door, pdu: bytes) -> None:
        """Send our last PDU, then wait (ARTIM) for the caller to hang up."""
        sock = door.sock
        try:
            sent = sock.send(pdu)  # a few bytes into an empty send buffer
            sock.shutdown(socket.SHUT_WR)  # on TLS this drops the TLS layer: reads are raw
        except (OSError, ValueError):
            sent = 0
        if sent != len(pdu):
            self._close(door)
            return
        door.phase = _Phase.CLOSING
        self._table.closing(door, self._clock() + ARTIM)
        self._want(door, selectors.EVENT_READ)

    def _drain(self, door: _Door) -> None:
        while True:
            try:
                chunk = door.sock.recv(RECV_CHUNK)
            except BlockingIOError:
                return
            door.dropped += len(chunk)
            if not chunk or door.dropped > LINGER_BYTES:
                self._close(door)
                return

    def _want(self, door: _Door, events: int) -> None:
        if door in self._doors and self._selector.get_key(door.sock).events != events:
            self._selector.modify(door.sock, events, door)

    def _expire(self) -> None:
        for door in self._table.expired(self._clock()):
            if door.phase is not _Phase.CLOSING:
                self._count("timed_out")
                reason = "TLS handshake too slow" if door.phase is _Phase.TLS else "peer too slow"
                event(self._log, logging.WARNING, "peer dropped", kind="timeout", reason=reason)
            self._close(door)

    def _crowded(self, peer: Peer) -> None:
        """A connection refused or evicted for want of room; logged as a rate, not each."""
        self._count("refused_crowded")
        now = self._clock()
        if now - self._crowd_logged_at < CROWD_LOG_INTERVAL:
            self._crowd_unlogged += 1
            self._log.debug("pending connection from %s refused: crowded", peer[0])
            return
        event(
            self._log,
            logging.WARNING,
            "peer dropped",
            kind="crowded",
            address=peer[0],
            pending=len(self._table),
            from_address=self._table.count(host_address(peer[0])),
            from_network=self._table.count_group(address_key(peer[0])),
            since_last=self._crowd_unlogged,
        )
        self._crowd_logged_at, self._crowd_unlogged = now, 0

    def _close(self, door: _Door) -> None:
        self._table.remove(door)
        if door in self._doors:
            self._doors.discard(door)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(door.sock)
        handshake.close_quietly(door.sock)
