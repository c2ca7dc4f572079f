"""TLS contexts for DICOM associations: PS3.15 BCP 195 profile with mutual authentication.

BCP 195 (RFC 9325, as adopted by DICOM's non-downgrading profile): no TLS below 1.2, and for
TLS 1.2 only forward-secret AEAD suites, ECDHE or DHE key exchange with AES-GCM or
ChaCha20-Poly1305. TLS 1.3 suites are all AEAD and are left to OpenSSL's defaults.
"""

from __future__ import annotations

import ssl

from gateway.config import TlsSettings, resolve_key_path

BCP195_TLS12_CIPHERS = (
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!DSS:!PSK:!SRP"
)

_MIN_VERSION = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsSetupError(ValueError):
    """The TLS files cannot be used: fix the configuration (retrying will not help)."""


def client_context(tls: TlsSettings, credentials_dir: str | None = None) -> ssl.SSLContext:
    """An SSLContext that presents our certificate and verifies the PACS against ``tls.ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _MIN_VERSION[tls.min_version]
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = tls.verify_hostname
    _load_trust_and_identity(context, tls, credentials_dir)
    return context


def server_context(tls: TlsSettings, credentials_dir: str | None = None) -> ssl.SSLContext:
    """An SSLContext for our listener: presents our certificate, REQUIRES one from every caller.

    Callers are verified against ``tls.ca``; ``verify_hostname`` has no meaning on this side
    (a modality's address says nothing about its certificate) and is ignored.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MIN_VERSION[tls.min_version]
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_TICKET  # no resumption state to keep or leak on a small box
    )
    context.verify_mode = ssl.CERT_REQUIRED
    _load_trust_and_identity(context, tls, credentials_dir)
    return context


def _load_trust_and_identity(
    context: ssl.SSLContext, tls: TlsSettings, credentials_dir: str | None
) -> None:
    """The CAs we trust for the peer, and our own certificate chain and key."""
    try:
        context.load_verify_locations(cafile=tls.ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"tls.ca {tls.ca}: cannot load CA certificates: {exc}") from None
    key = resolve_key_path(tls.key, credentials_dir)
    try:
        context.load_cert_chain(certfile=tls.cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        # The message names files only; OpenSSL never puts key material in it.
        raise TlsSetupError(
            f"tls.cert {tls.cert} / tls.key {key}: cannot load certificate and key: {exc}"
        ) from None
