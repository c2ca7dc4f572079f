"""The first bytes of a connection: what the pre-authentication phase checks and answers.

No I/O here: ``gate.py`` reads, this module judges what was read. An A-ASSOCIATE-RQ is
*well-formed* when its header passes :func:`~gateway.listener.guard.check_header` and pynetdicom
(which will negotiate it) decodes its body into an A-ASSOCIATE primitive with an application
context name and at least one presentation context (PS3.8 9.3.2). A calling AE title outside
``allowed_calling_ae_titles`` is answered here too, as pynetdicom would answer it, so that a
caller who may not associate never takes an association slot.

The answers, as PS3.8 puts them for an acceptor awaiting an A-ASSOCIATE-RQ (Sta2): an invalid or
unexpected PDU gets A-ABORT (AA-1), an A-ABORT is not answered (AA-2); a request we cannot take
now gets A-ASSOCIATE-RJ "local limit exceeded" (transient, the modality retries).
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Sequence
from contextlib import suppress

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from gateway.listener.guard import PeerRefusedError

A_ABORT = 0x07

# A-ASSOCIATE-RJ: result 2 (rejected-transient), source 3 (service-provider, presentation),
# reason 2 (local-limit-exceeded).
BUSY_REJECT = struct.pack(">BBLBBBB", 0x03, 0, 4, 0, 0x02, 0x03, 0x02)
# A-ASSOCIATE-RJ: result 1 (rejected-permanent), source 1 (service-user), reason 3
# (calling-AE-title-not-recognized): what pynetdicom sends for require_calling_aet.
CALLING_AE_REJECT = struct.pack(">BBLBBBB", 0x03, 0, 4, 0, 0x01, 0x01, 0x03)


def start_tls(raw: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
    """Wrap ``raw`` for a server-side handshake (no I/O yet; ``raw`` is detached by this)."""
    return context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)


def parse_association_request(pdu: bytes) -> A_ASSOCIATE:
    """The A-ASSOCIATE primitive of a whole A-ASSOCIATE-RQ PDU (header checked already).

    PeerRefusedError ``malformed`` when it is not well-formed (see the module docstring).
    """
    decoded = A_ASSOCIATE_RQ()
    try:
        decoded.decode(pdu)
        primitive = decoded.to_primitive()
    except Exception as exc:  # noqa: BLE001 - pynetdicom's decoder raises what bytes provoke
        detail = f"A-ASSOCIATE-RQ does not decode: {type(exc).__name__}"
        raise PeerRefusedError("malformed", detail) from None
    if not primitive.application_context_name:
        raise PeerRefusedError("malformed", "A-ASSOCIATE-RQ without an application context")
    if not primitive.presentation_context_definition_list:
        raise PeerRefusedError("malformed", "A-ASSOCIATE-RQ without a presentation context")
    return primitive


def calling_ae_allowed(primitive: A_ASSOCIATE, allowed: Sequence[str]) -> bool:
    """Whether the caller's AE title may associate (any, when ``allowed`` is empty).

    The same comparison as pynetdicom's ``require_calling_aet`` (both sides stripped).
    """
    if not allowed:
        return True
    calling = str(primitive.calling_ae_title or "").strip()
    return calling in {title.strip() for title in allowed}


def calling_ae(primitive: A_ASSOCIATE) -> str:
    """The calling AE title, for logs (AE titles identify devices, not patients)."""
    return str(primitive.calling_ae_title or "").strip()


def close_quietly(sock: socket.socket) -> None:
    """Shut down and close, ignoring a peer that is already gone."""
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
