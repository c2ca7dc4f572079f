"""The DICOM listener: one front-door thread for every caller not yet admitted, one thread per
association.

Per connection, in order (each step bounded): in the front door (``gate.py``, one selector
thread, non-blocking sockets), the TLS handshake with the client certificate verified and the
A-ASSOCIATE-RQ, within ``handshake_timeout`` of accept, its declared length checked before the
body is read, its body decoded and the calling AE title checked; then, in a thread of its own,
pynetdicom negotiates the association and serves it; every later PDU is length-checked against
``max_pdu`` and must arrive whole within ``network_timeout``; an association idle for
``network_timeout`` is aborted by pynetdicom.

Only a connection that has done all of the first part takes an association slot: at most
``max_associations`` are served at once, and a well-formed request beyond that is answered
A-ASSOCIATE-RJ "local limit exceeded" by the front door, so a modality knows to retry. Callers
still in the first part cost a socket each, bounded per address and in all
(``admission.py``); a peer that connects and says nothing, or stops in its TLS handshake, holds
neither a thread nor a slot and delays no one.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress

from pydicom.uid import UID
from pynetdicom.ae import ApplicationEntity
from pynetdicom.transport import AddressInformation

from gateway import product
from gateway.config import DicomListenerSection
from gateway.listener import tuning
from gateway.listener.admission import AdmissionLimits
from gateway.listener.connection import Connection, ConnectionPlan
from gateway.listener.gate import Gate, GatePlan
from gateway.listener.guard import PduLimits
from gateway.listener.services import ListenerService, verification_service
from gateway.logsetup import event

STOP_GRACE = 2.0  # seconds an aborted association gets to say goodbye
STATS_KEYS = (
    "accepted",
    "refused_busy",
    "refused_crowded",
    "refused_oversize",
    "refused_malformed",
    "timed_out",
    "tls_failed",
    "rejected",
    "aborted",
    "errors",
    "accept_failed",
)


class ListenerStateError(RuntimeError):
    """start() twice, or address asked before start(): a lifecycle bug in the caller."""


class DicomListener:
    """Accepts DICOM associations for ``services`` (Verification is always answered)."""

    def __init__(
        self,
        settings: DicomListenerSection,
        ae_title: str,
        ssl_context: ssl.SSLContext | None,
        services: Sequence[ListenerService],
        logger: logging.Logger,
        *,
        admission: AdmissionLimits | None = None,
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._log = logger
        self._admission = admission or AdmissionLimits()
        if not any(s.name == "verification" for s in services):
            services = (verification_service(), *services)
        self._services = tuple(services)
        self._ae = _build_ae(settings, ae_title, self._services)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._served: dict[Connection, threading.Thread] = {}
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._plan: ConnectionPlan | None = None
        self._gate: Gate | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and listen (port 0 picks a free one), then start the accept thread."""
        if self._sock is not None:
            raise ListenerStateError("listener already started")
        family = socket.AF_INET6 if ":" in self._settings.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._settings.bind, self._settings.port))
            # Room for a burst of callers while the front door is busy with a flood.
            sock.listen(max(128, 2 * self._settings.max_associations))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        tuning.install()  # process-wide, changes no bytes: see gateway/listener/tuning.py
        s = self._settings
        self._plan = ConnectionPlan(
            ae=self._ae,
            services=self._services,
            max_pdu=s.max_pdu,
            pdu_timeout=s.network_timeout,
            local=AddressInformation.from_tuple(self.address),
        )
        gate_plan = GatePlan(
            ssl_context=self._ssl_context,
            handshake_timeout=s.handshake_timeout,
            pdu_limits=PduLimits(max_pdata=s.max_pdu),
            allowed_calling_ae_titles=tuple(s.allowed_calling_ae_titles),
            admission=self._admission,
        )
        self._gate = Gate(
            sock,
            self._wake_r,
            gate_plan,
            self._hand_off,
            count=self._count,
            logger=self._log,
            stopping=self._stopping,
        )
        self._accept_thread = threading.Thread(
            target=self._gate.run, name="listener-accept", daemon=True
        )
        self._accept_thread.start()
        event(
            self._log,
            logging.INFO,
            "listener started",
            port=self.address[1],
            tls=self._ssl_context is not None,
            max_associations=s.max_associations,
        )

    def stop(self) -> None:
        """Stop accepting, close every pending caller, abort every association, join threads."""
        self._stopping.set()
        with suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join()
        with self._lock:
            running = dict(self._served)
        for conn in running:
            conn.interrupt()
        for thread in running.values():
            thread.join(STOP_GRACE)
        for conn, thread in running.items():
            if thread.is_alive():
                conn.force()
        for thread in running.values():
            thread.join()
        if self._sock is not None:
            self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        event(self._log, logging.INFO, "listener stopped", **self.stats())

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) we listen on; the real port when 0 was configured."""
        if self._sock is None:
            raise ListenerStateError("listener not started")
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    def stats(self) -> dict[str, int]:
        """Counters since start, plus ``active`` (associations being served right now)."""
        with self._lock:
            out = {key: self._counts[key] for key in STATS_KEYS}
            out["active"] = len(self._served)
        return out

    def pending(self) -> int:
        """Callers in the front door now: not yet admitted to an association (or being closed)."""
        return 0 if self._gate is None else self._gate.pending()

    # -- admitting ---------------------------------------------------------------------------

    def _hand_off(self, sock: socket.socket, peer: tuple[str, int], first: bytes) -> bool:
        """Called by the front door: serve this authenticated caller if a slot is free.

        False (the front door answers "local limit exceeded") when every slot is taken, or when
        the system will not start another thread: the slot is given back then, or each such
        failure would keep one for good and, after ``max_associations`` of them, the listener
        would refuse everyone until restarted.
        """
        assert self._plan is not None
        conn = Connection(sock, peer, first, self._plan, count=self._count, logger=self._log)
        thread = threading.Thread(
            target=self._serve, args=(conn,), name=f"listener-{peer[1]}", daemon=True
        )
        with self._lock:
            if len(self._served) >= self._settings.max_associations:
                return False
            self._served[conn] = thread
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": out of memory or of tasks
            with self._lock:
                del self._served[conn]
                self._counts["errors"] += 1
            event(self._log, logging.ERROR, "association thread not started", error=str(exc))
            return False
        return True

    def _serve(self, conn: Connection) -> None:
        try:
            conn.run()
        finally:
            with self._lock:
                self._served.pop(conn, None)

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1


def _build_ae(
    settings: DicomListenerSection, ae_title: str, services: Sequence[ListenerService]
) -> ApplicationEntity:
    """The pynetdicom AE that holds our contexts, timeouts and AE restriction."""
    ae = ApplicationEntity(ae_title=ae_title)
    # The A-ASSOCIATE-AC names the product, not pynetdicom (connection.py copies both).
    ae.implementation_class_uid = UID(product.IMPLEMENTATION_CLASS_UID)
    ae.implementation_version_name = product.IMPLEMENTATION_VERSION_NAME
    ae.maximum_pdu_size = settings.max_pdu
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.maximum_associations = settings.max_associations
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    for service in services:
        for sop_class in service.sop_classes:
            ae.add_supported_context(sop_class, list(service.transfer_syntaxes))
    return ae
