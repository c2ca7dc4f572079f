"""One association, in its own thread: from the A-ASSOCIATE-RQ the front door has read to cleanup.

The connection arrives here authenticated (TLS done, when configured) with its well-formed
A-ASSOCIATE-RQ already read (``gate.py``); pynetdicom negotiates and serves it.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from copy import deepcopy
from dataclasses import dataclass

from pynetdicom import _config
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation

from gateway.contextlog import negotiation_handlers
from gateway.listener import handshake, tuning
from gateway.listener.guard import GuardedSocket, PduLimits, PeerRefusedError
from gateway.listener.services import ListenerService
from gateway.logsetup import event


@dataclass(frozen=True)
class ConnectionPlan:
    """What every connection of one listener shares."""

    ae: ApplicationEntity
    services: Sequence[ListenerService]
    max_pdu: int
    pdu_timeout: float  # a started PDU must be complete within this
    local: AddressInformation


Counter = Callable[[str], None]


class Connection:
    """Serves one caller: ``run()`` in the connection's thread, ``interrupt()`` from any."""

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        first: bytes,
        plan: ConnectionPlan,
        *,
        count: Counter,
        logger: logging.Logger,
    ) -> None:
        self._sock = sock  # blocking; a TLS socket whose handshake is done, when configured
        self._peer = peer
        self._first = first  # the whole A-ASSOCIATE-RQ PDU
        self._plan = plan
        self._count = count
        self.log = logger
        self._lock = threading.Lock()
        self._assoc: Association | None = None
        self._stopping = False

    def run(self) -> None:
        """Association, cleanup; never raises (the listener outlives any peer)."""
        limits = PduLimits(
            max_pdata=self._plan.max_pdu,
            store_streams_to_disk=_config.STORE_RECV_CHUNKED_DATASET,
        )
        try:
            self._associate(self._sock, self._first, limits)
        except PeerRefusedError as exc:
            self._refused(exc)
        except OSError as exc:
            if not self._stopping:
                event(self.log, logging.INFO, "connection lost", error=type(exc).__name__)
        except Exception:  # a bug here must not take the listener down with it
            self.log.exception("connection failed")
            self._count("errors")
        finally:
            handshake.close_quietly(self._sock)

    def _refused(self, exc: PeerRefusedError) -> None:
        if exc.kind == "closed":
            return
        key = "timed_out" if exc.kind == "timeout" else f"refused_{exc.kind}"
        self._count(key)
        event(self.log, logging.WARNING, "peer dropped", kind=exc.kind, reason=exc.detail)

    def _associate(self, sock: socket.socket, first: bytes, limits: PduLimits) -> None:
        plan = self._plan
        assoc = Association(plan.ae, MODE_ACCEPTOR)
        assoc.name = f"listener-assoc-{self._peer[1]}"
        tuning.tune_association(assoc)
        guarded = GuardedSocket(assoc, sock, first, limits, plan.pdu_timeout, self._refused)
        assoc.set_socket(guarded)
        acceptor = assoc.acceptor
        acceptor.maximum_length = plan.ae.maximum_pdu_size
        acceptor.ae_title = plan.ae.ae_title
        acceptor.address_info = plan.local
        acceptor.implementation_class_uid = plan.ae.implementation_class_uid
        acceptor.implementation_version_name = plan.ae.implementation_version_name
        acceptor.supported_contexts = deepcopy(plan.ae.supported_contexts)
        assoc.requestor.address_info = AddressInformation.from_tuple(self._peer)
        for service in plan.services:
            for evt_type, handler in service.handlers:
                assoc.bind(evt_type, handler)
        for evt_type, handler in negotiation_handlers(self.log, "listener"):
            assoc.bind(evt_type, handler)
        with self._lock:
            if self._stopping:
                return
            self._assoc = assoc
        try:
            # pynetdicom's reactor, in this thread; it starts the DUL thread itself.
            assoc.run()
        finally:
            self._finish(assoc)

    def _finish(self, assoc: Association) -> None:
        if assoc.is_rejected:
            self._count("rejected")
            event(self.log, logging.WARNING, "association rejected", calling_ae=_calling(assoc))
        elif assoc.is_aborted:
            self._count("aborted")
        for service in self._plan.services:
            if service.on_association_end is not None:
                try:
                    service.on_association_end(assoc)
                except Exception:
                    self.log.exception("end-of-association hook failed")

    def interrupt(self) -> None:
        """Ask the peer to go: A-ABORT an established association, cut a handshake short."""
        with self._lock:
            self._stopping = True
            assoc = self._assoc
        if assoc is not None and assoc.is_established:
            assoc.abort(block=False)  # queued; the DUL sends it and closes
        else:
            self.force()

    def force(self) -> None:
        """Shut the socket down; a blocked read returns and the association ends."""
        with self._lock:
            sock = self._sock
        # shutdown without close: the connection's own thread still closes the descriptor.
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _calling(assoc: Association) -> str:
    # AE titles identify devices, not patients.
    return str(assoc.requestor.ae_title or "").strip()
