"""C-ECHO with the details an engineer needs when setting up a PACS link."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from pydicom.uid import ImplicitVRLittleEndian

from gateway.config import Destination
from gateway.forward.link import Connector, Link
from gateway.forward.outcome import SendOutcome

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class EchoReport:
    """Result of one C-ECHO: whether it worked, why not, and what the PACS showed of itself."""

    ok: bool
    reason: str
    tls_version: str | None = None
    cipher: str | None = None
    peer_subject: str | None = None
    peer_not_after: datetime | None = None
    called_ae_title: str = ""
    calling_ae_title: str = ""
    peer_implementation_class_uid: str | None = None
    peer_implementation_version_name: str | None = None
    peer_max_pdu: int | None = None
    round_trip_ms: float | None = None


def _certificate_fields(der: bytes | None) -> tuple[str | None, datetime | None]:
    if not der:
        return None, None
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.rfc4514_string(), cert.not_valid_after_utc


def echo(
    destination: Destination, calling_ae_title: str, ssl_context: ssl.SSLContext | None
) -> EchoReport:
    """Associate, C-ECHO, release; never raises for network or peer problems."""
    connector = Connector(destination, calling_ae_title, ssl_context)
    opened = connector.open([(VERIFICATION_SOP_CLASS, str(ImplicitVRLittleEndian))])
    if isinstance(opened, SendOutcome):
        return EchoReport(
            ok=False,
            reason=opened.reason,
            called_ae_title=destination.ae_title,
            calling_ae_title=calling_ae_title,
        )
    link: Link = opened
    try:
        details = link.details()
        started = time.perf_counter()
        result = link.echo()
        round_trip = (time.perf_counter() - started) * 1000.0
    finally:
        link.release()
    subject, not_after = _certificate_fields(details.peer_certificate_der)
    if isinstance(result, SendOutcome):
        ok, reason = False, result.reason
    else:
        ok = result == 0
        reason = "C-ECHO succeeded" if ok else f"C-ECHO answered with status 0x{result:04X}"
    return EchoReport(
        ok=ok,
        reason=reason,
        tls_version=details.tls_version,
        cipher=details.cipher,
        peer_subject=subject,
        peer_not_after=not_after,
        peer_implementation_class_uid=details.implementation_class_uid,
        peer_implementation_version_name=details.implementation_version_name,
        peer_max_pdu=details.max_pdu,
        round_trip_ms=round(round_trip, 2) if ok else None,
        called_ae_title=destination.ae_title,
        calling_ae_title=calling_ae_title,
    )
