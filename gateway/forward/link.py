"""The one place that drives pynetdicom as an SCU: open an association, send, release.

Traps of pynetdicom 3.0.4 this module guards against (each reproduced by a test in
tests/forward, except the maximum PDU of 0, found by reading ``dimse_messages.py``):

* ``connection_timeout`` defaults to None and the TLS handshake runs inside connect: a PACS that
  accepts TCP but never speaks hangs the sender. Every timeout is set from the Destination.
* After connecting, pynetdicom clears the socket timeout (``settimeout(None)``): a PACS that
  stops reading blocks the sending thread for ever. The EVT_CONN_OPEN handler puts the
  network timeout back and sets TCP_NODELAY (pynetdicom has no public socket-option hook for
  an SCU; ``_socket_options`` does not exist in 3.0).
* ``send_c_store(path)`` with ``_config.STORE_SEND_CHUNKED_DATASET`` streams the file in PDUs
  instead of decoding it, but pushes every PDU into the DUL's unbounded queue at disk speed:
  with a slower network the whole object ends up in memory anyway. A send window holds the
  sender back while the queue is full. A peer maximum PDU of 0 ("unlimited") would make it read
  the whole file in one go, so the PDU size we send is capped.
* A failed connect is only logged; ``diagnose.probe_connection`` names the cause.
* Closing a socket that never connected: pynetdicom's ``_shutdown_socket`` calls ``shutdown()``
  and ``close()`` in one try block, so the ENOTCONN of the first skips the second and every
  failed attempt leaves the descriptor to the garbage collector. Our socket class closes it.
* The DUL thread is not a daemon thread: while an association lives, the interpreter cannot
  exit, and a stop that gives up on a lane stuck in a C-STORE leaves the process running until
  the PACS answers. Our AE makes it a daemon (the stop aborts the association first: see
  ``Link.interrupt``); the blocking ``abort()`` waits for the PACS to close the connection
  (or the 30 s ARTIM timer), and a locally sent A-ABORT never wakes a thread waiting for a
  DIMSE response, so ``interrupt`` does both itself.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA, MaximumLengthNotification
from pynetdicom.transport import AddressInformation, AssociationSocket

from gateway import product
from gateway.config import Destination
from gateway.forward.contexts import Pair
from gateway.forward.diagnose import probe_connection
from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome
from gateway.forward.rejection import describe_rejection

PEER_PDU_CAP = 1024 * 1024  # largest P-DATA we send, whatever the PACS allows
SEND_WINDOW_BYTES = 2 * 1024 * 1024  # encoded PDUs allowed to wait for the socket
_POLL = 0.0005
_ABORT_SENT = ("Sta13", "Sta1")  # after AA-1: A-ABORT written, awaiting the close; or closed
INTERRUPT_WAIT_SECONDS = 1.0  # for the A-ABORT PDU to leave, then for the DUL thread to end
_NEAR = 0.9  # an attempt that failed after 90 % of a timeout ran into that timeout


class LinkLostError(Exception):
    """The association died while an object was being sent: abort it and retry later."""

    def __init__(self, reason: str, failure_class: FailureClass) -> None:
        super().__init__(reason)
        self.failure_class = failure_class


def _retry(failure_class: FailureClass, reason: str) -> SendOutcome:
    return SendOutcome(OutcomeKind.RETRY, reason, failure_class)


def tune_socket(sock: socket.socket, network_timeout: float) -> None:
    """TCP_NODELAY (the last PDU of a message must not wait for an ACK) and a send timeout."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(network_timeout)


@dataclass(frozen=True)
class PeerDetails:
    """What the PACS told us about itself while associating."""

    tls_version: str | None
    cipher: str | None
    peer_certificate_der: bytes | None
    implementation_class_uid: str | None
    implementation_version_name: str | None
    max_pdu: int | None


class _SendWindow:
    """Holds the sending thread back while ``limit`` PDUs already wait in pynetdicom's queue."""

    def __init__(self, assoc: Any, limit: int, stall_seconds: float) -> None:
        self._assoc = assoc
        self._dul = assoc.dul
        self._limit = max(limit, 2)
        self._stall = stall_seconds
        self._put: Callable[[Any], None] = self._dul.send_pdu
        # Instance attribute shadows the method: only this association's DUL is throttled.
        self._dul.send_pdu = self._send_pdu

    def _send_pdu(self, primitive: Any) -> None:
        if isinstance(primitive, P_DATA):
            self._wait_for_room()
        self._put(primitive)

    def _wait_for_room(self) -> None:
        queue = self._dul.to_provider_queue
        waiting = queue.qsize()
        moved_at = time.monotonic()
        while waiting >= self._limit:
            if not self._dul.is_alive() or self._dul.state_machine.current_state != "Sta6":
                # The socket's send timeout is the same network timeout: when nothing moved
                # for about that long, the loss is that timeout firing in pynetdicom's thread
                # (which swallows it), not a peer that hung up.
                if time.monotonic() - moved_at >= _NEAR * self._stall:
                    raise self._stalled()
                raise LinkLostError(
                    "connection to the PACS was lost during the C-STORE",
                    FailureClass.ASSOCIATION_ABORTED,
                )
            time.sleep(_POLL)
            now_waiting = queue.qsize()
            if now_waiting < waiting:
                moved_at = time.monotonic()
            elif time.monotonic() - moved_at > self._stall:
                raise self._stalled()
            waiting = now_waiting

    def _stalled(self) -> LinkLostError:
        return LinkLostError(
            f"the PACS stopped reading for {self._stall:g} s during the C-STORE",
            FailureClass.TIMEOUT,
        )


def _cap_peer_pdu(assoc: Any, cap: int) -> int:
    """Send PDUs no larger than ``cap`` (PS3.8 allows smaller than the peer's maximum)."""
    items = assoc.acceptor.user_information
    for item in items:
        if isinstance(item, MaximumLengthNotification):
            size = item.maximum_length_received
            if not size or size > cap:
                item.maximum_length_received = cap
            return int(item.maximum_length_received)
    item = MaximumLengthNotification()
    item.maximum_length_received = cap
    items.append(item)
    return cap


class Link:
    """One established association: streams files, reports statuses, never raises for the peer."""

    def __init__(self, assoc: Any, proposed: Sequence[Pair], destination: Destination) -> None:
        self._assoc = assoc
        self._destination = destination
        self.proposed = frozenset(proposed)
        self.accepted = frozenset(
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
        )
        self.peer_max_pdu: int | None = assoc.acceptor.maximum_length
        pdu = _cap_peer_pdu(assoc, PEER_PDU_CAP)
        _SendWindow(assoc, SEND_WINDOW_BYTES // pdu, destination.network_timeout)
        self._message_id = 0

    @property
    def usable(self) -> bool:
        """Still established (the PACS may have released or aborted it meanwhile)."""
        return bool(self._assoc.is_established)

    @property
    def socket(self) -> socket.socket | None:
        """The connected socket (an SSLSocket over TLS)."""
        holder = self._assoc.dul.socket
        return None if holder is None else holder.socket

    def details(self) -> PeerDetails:
        """TLS parameters and the PACS's implementation identity."""
        sock = self.socket
        version = cipher = der = None
        if isinstance(sock, ssl.SSLSocket):
            version = sock.version()
            suite = sock.cipher()
            cipher = suite[0] if suite else None
            der = sock.getpeercert(binary_form=True)
        acceptor = self._assoc.acceptor
        return PeerDetails(
            tls_version=version,
            cipher=cipher,
            peer_certificate_der=der,
            implementation_class_uid=_text(acceptor.implementation_class_uid),
            implementation_version_name=_text(acceptor.implementation_version_name),
            max_pdu=self.peer_max_pdu,
        )

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % 65535 + 1
        return self._message_id

    def store(self, source: Path | Dataset) -> int | SendOutcome:
        """C-STORE a file (streamed) or a data set; the response status, or why there was none."""
        started = time.monotonic()
        try:
            response = self._assoc.send_c_store(source, msg_id=self._next_message_id())
        except LinkLostError as exc:
            self.abort()
            return _retry(exc.failure_class, str(exc))
        except RuntimeError:
            self.abort()
            return _retry(FailureClass.ASSOCIATION_ABORTED, "association ended before the C-STORE")
        except FileNotFoundError:
            self.abort()
            return SendOutcome(
                OutcomeKind.REFUSED, "queued file is missing", FailureClass.UNREADABLE
            )
        except OSError as exc:
            self.abort()
            return _retry(FailureClass.UNREADABLE, f"queued file cannot be read: {exc.strerror}")
        except (ValueError, AttributeError) as exc:
            return SendOutcome(
                OutcomeKind.REFUSED, f"object cannot be encoded: {exc}", FailureClass.UNREADABLE
            )
        return self._status_or_failure(response, started, "C-STORE")

    def echo(self) -> int | SendOutcome:
        """C-ECHO; the response status, or why there was none."""
        started = time.monotonic()
        try:
            response = self._assoc.send_c_echo(msg_id=self._next_message_id())
        except RuntimeError:
            return _retry(FailureClass.ASSOCIATION_ABORTED, "association ended before the C-ECHO")
        return self._status_or_failure(response, started, "C-ECHO")

    def _status_or_failure(self, response: Any, started: float, what: str) -> int | SendOutcome:
        status = response.get("Status") if response is not None else None
        if status is not None:
            return int(status)
        waited = time.monotonic() - started
        self.abort()
        limit = self._destination.dimse_timeout
        if waited >= _NEAR * limit:
            return _retry(FailureClass.TIMEOUT, f"no {what} response within {limit:g} s")
        return _retry(
            FailureClass.ASSOCIATION_ABORTED,
            f"association aborted or connection lost before the {what} response",
        )

    def release(self) -> None:
        """Graceful A-RELEASE (pynetdicom aborts if the PACS does not answer in time)."""
        if self._assoc.is_established:
            self._assoc.release()

    def abort(self) -> None:
        """A-ABORT and close; harmless when already gone."""
        if not self._assoc.is_released:
            self._assoc.abort()

    def interrupt(self) -> None:
        """From another thread (a stop deadline): A-ABORT, close the connection, wake the sender.

        Bounded: each step waits at most ``INTERRUPT_WAIT_SECONDS``. The thread blocked in
        ``store`` then gets "no response" and returns an ASSOCIATION_ABORTED retry.
        """
        assoc = self._assoc
        if assoc.is_released or assoc.is_aborted:
            return
        dul = assoc.dul
        # Queues the A-ABORT primitive; the DUL thread sends the PDU (AA-1, then Sta13).
        assoc.abort(block=False)
        _wait_for(
            lambda: dul.state_machine.current_state in ("Sta13", "Sta1") or not dul.is_alive()
        )
        sock = self.socket
        if sock is not None:
            # The plain socket's shutdown: the DUL thread may be inside the SSL object, which
            # SSLSocket.shutdown would clear under it. It then reads end-of-file: Sta1.
            with suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        _wait_for(lambda: not dul.is_alive() or dul.stop_dul())
        # The reactor thread (un-paused by the abort) ends once the DUL has; until then it
        # could take what we queue next for itself.
        _wait_for(lambda: not assoc.is_alive())
        # What pynetdicom itself queues when the peer aborts (fsm AA-2..AA-4): "no response".
        assoc.dimse.msg_queue.put((None, None))


def _wait_for(done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + INTERRUPT_WAIT_SECONDS
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _text(value: object) -> str | None:
    return None if value is None else str(value).strip() or None


class ClosingAssociationSocket(AssociationSocket):
    """An AssociationSocket whose close really closes, even when shutdown() fails.

    pynetdicom's skips close() when shutdown() fails (a peer already gone), leaking the fd.
    """

    def _shutdown_socket(self) -> None:
        sock = self.socket
        if sock is None:
            return
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            sock.close()


class GatewayAE(AE):
    """pynetdicom's AE with the product's identity, making our socket class.

    Every association we open (store, echo, worklist C-FIND) announces the product's
    Implementation Class UID and Version Name (gateway.product), not pynetdicom's. The socket
    factory it overrides is private (pinned to 3.0.x).
    """

    def __init__(self, ae_title: str) -> None:
        super().__init__(ae_title=ae_title)
        self.implementation_class_uid = UID(product.IMPLEMENTATION_CLASS_UID)
        self.implementation_version_name = product.IMPLEMENTATION_VERSION_NAME

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        sock = ClosingAssociationSocket(assoc, address=address)
        sock.tls_args = tls_args
        # Called before the DUL thread starts: an association left open must not keep the
        # process alive (see the module docstring).
        assoc.dul.daemon = True
        return sock


class Connector:
    """Opens associations to one destination with every timeout set from its configuration."""

    def __init__(
        self,
        destination: Destination,
        calling_ae_title: str,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._destination = destination
        self._ssl_context = ssl_context
        # pynetdicom's documented switch for streaming send_c_store(path) from the file. It is
        # process-wide, and only changes send_c_store called with a path: only we do that.
        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = GatewayAE(ae_title=calling_ae_title)
        ae.connection_timeout = destination.connect_timeout
        ae.acse_timeout = destination.acse_timeout
        ae.dimse_timeout = destination.dimse_timeout
        ae.network_timeout = destination.network_timeout
        ae.maximum_pdu_size = destination.max_pdu
        self._ae = ae

    def open(self, pairs: Sequence[Pair]) -> Link | SendOutcome:
        """Associate proposing ``pairs``; the Link, or a RETRY/REFUSED outcome saying why not."""
        dest = self._destination
        opened: list[bool] = []

        def on_open(event: Any) -> None:
            tune_socket(event.assoc.dul.socket.socket, dest.network_timeout)
            opened.append(True)

        contexts = [build_context(sop, [ts]) for sop, ts in pairs]
        tls_args = (self._ssl_context, dest.host) if self._ssl_context else None
        started = time.monotonic()
        try:
            assoc = self._ae.associate(
                dest.host,
                dest.port,
                contexts,
                ae_title=dest.ae_title,
                max_pdu=dest.max_pdu,
                tls_args=tls_args,
                evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
            )
        except socket.gaierror as exc:
            return _retry(
                FailureClass.CONNECTION_REFUSED, f"cannot resolve {dest.host}: {exc.strerror}"
            )
        except OSError as exc:
            return _retry(
                FailureClass.CONNECTION_REFUSED, f"cannot connect to {dest.host}: {exc.strerror}"
            )
        if assoc.is_established:
            return Link(assoc, pairs, dest)
        return self._why_not(assoc, bool(opened), time.monotonic() - started, pairs)

    def _why_not(
        self, assoc: Any, opened: bool, waited: float, pairs: Sequence[Pair]
    ) -> SendOutcome:
        dest = self._destination
        where = f"{dest.ae_title}@{dest.host}:{dest.port}"
        response = assoc.acceptor.primitive
        if assoc.is_rejected and response is not None:
            words = describe_rejection(response.result, response.result_source, response.diagnostic)
            return _retry(FailureClass.ASSOCIATION_REJECTED, f"association {words} ({where})")
        if response is not None and response.result == 0:
            classes = sorted({UID(sop).name for sop, _ in pairs})
            return SendOutcome(
                OutcomeKind.REFUSED,
                f"the PACS accepted none of the {len(pairs)} proposed presentation contexts "
                f"({', '.join(classes)})",
                FailureClass.NO_PRESENTATION_CONTEXT,
                accepted_sop_classes=frozenset(),
            )
        if not opened:
            if waited >= _NEAR * dest.connect_timeout:
                step = "TCP connection or TLS handshake" if self._ssl_context else "TCP connection"
                return _retry(
                    FailureClass.TIMEOUT,
                    f"no {step} with {where} within {dest.connect_timeout:g} s",
                )
            return probe_connection(dest.host, dest.port, self._ssl_context, dest.connect_timeout)
        if waited >= _NEAR * dest.acse_timeout:
            return _retry(
                FailureClass.TIMEOUT,
                f"no answer to the association request from {where} within {dest.acse_timeout:g} s",
            )
        if self._ssl_context is not None:
            return _retry(
                FailureClass.TLS,
                f"{where} closed the TLS connection before answering the association request "
                "(it may not accept our client certificate)",
            )
        return _retry(
            FailureClass.ASSOCIATION_ABORTED,
            f"{where} closed the connection before answering the association request",
        )
