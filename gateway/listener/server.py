"""The DICOM listener: one accept thread, one thread per connection, a hard limit on both.

Per connection, in order (each step bounded): TLS handshake and A-ASSOCIATE-RQ within
``handshake_timeout`` (its declared length checked before the body is read), then pynetdicom
negotiates the association (calling AE titles restricted when configured) and serves it; every
later PDU is length-checked against ``max_pdu`` and must arrive whole within
``network_timeout``; an association idle for ``network_timeout`` is aborted by pynetdicom.

At most ``max_associations`` connections are served at once, handshakes included. A few more
(``busy_lanes``) are read just far enough to answer A-ASSOCIATE-RJ "local limit exceeded", so a
modality knows to retry; beyond that a connection is closed at once. The accept thread never
does I/O with a peer, so a peer that connects and says nothing delays no one.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
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
from gateway.listener.connection import Connection, ConnectionPlan
from gateway.listener.services import ListenerService, verification_service
from gateway.logsetup import event

BUSY_LANES = 2
STOP_GRACE = 2.0  # seconds an aborted association gets to say goodbye
STATS_KEYS = (
    "accepted",
    "refused_busy",
    "refused_oversize",
    "refused_malformed",
    "timed_out",
    "tls_failed",
    "rejected",
    "aborted",
    "errors",
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
        busy_lanes: int = BUSY_LANES,
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._log = logger
        self._busy_lanes = busy_lanes
        if not any(s.name == "verification" for s in services):
            services = (verification_service(), *services)
        self._services = tuple(services)
        self._ae = _build_ae(settings, ae_title, self._services)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._served: dict[Connection, threading.Thread] = {}
        self._busy: dict[Connection, threading.Thread] = {}
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._plan: ConnectionPlan | None = None

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
            sock.listen(max(16, 2 * self._settings.max_associations))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        tuning.install()  # process-wide, changes no bytes: see gateway/listener/tuning.py
        s = self._settings
        self._plan = ConnectionPlan(
            ae=self._ae,
            ssl_context=self._ssl_context,
            services=self._services,
            max_pdu=s.max_pdu,
            handshake_timeout=s.handshake_timeout,
            pdu_timeout=s.network_timeout,
            local=AddressInformation.from_tuple(self.address),
        )
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="listener-accept", daemon=True
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
        """Stop accepting, abort every association, and join every thread we started."""
        self._stopping.set()
        with suppress(OSError):
            self._wake_w.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join()
        with self._lock:
            running = {**self._served, **self._busy}
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
        """Counters since start, plus ``active`` (connections being served right now)."""
        with self._lock:
            out = {key: self._counts[key] for key in STATS_KEYS}
            out["active"] = len(self._served)
        return out

    # -- accepting ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._sock is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._sock:
                        self._accept_one()

    def _accept_one(self) -> None:
        assert self._sock is not None and self._plan is not None
        try:
            raw, peer = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # e.g. EMFILE: keep serving those we have
            event(self._log, logging.ERROR, "accept failed", error=str(exc))
            self._stopping.wait(0.1)
            return
        raw.setblocking(True)
        # Short answers (C-ECHO, a few C-FIND matches) must not wait for the peer's delayed ACK.
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if len(self._served) < self._settings.max_associations:
                table = self._served
            elif len(self._busy) < self._busy_lanes:
                table = self._busy
            else:
                self._counts["refused_busy"] += 1
                table = None
            if table is not None:
                self._counts["accepted"] += 1
        if table is None:
            with suppress(OSError):
                raw.close()
            return
        conn = Connection(
            raw,
            (str(peer[0]), int(peer[1])),
            self._plan,
            busy=table is self._busy,
            count=self._count,
            logger=self._log,
        )
        thread = threading.Thread(
            target=self._serve, args=(conn, table), name=f"listener-{peer[1]}", daemon=True
        )
        with self._lock:
            table[conn] = thread
        thread.start()

    def _serve(self, conn: Connection, table: dict[Connection, threading.Thread]) -> None:
        try:
            conn.run()
        finally:
            with self._lock:
                table.pop(conn, None)

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
