"""Why a connection to the PACS failed: refused, unreachable, timed out, or TLS, and what TLS said.

pynetdicom swallows the exception of a failed connect (it only logs it), so when an association
request never got a transport connection, one plain probe repeats the TCP connect and TLS
handshake with the same settings and names the cause. It runs only after a failure, which
backs off the whole lane, so it costs one extra connection per outage step.
"""

from __future__ import annotations

import socket
import ssl

from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome


def _retry(failure_class: FailureClass, reason: str) -> SendOutcome:
    return SendOutcome(OutcomeKind.RETRY, reason, failure_class)


def describe_tls_error(exc: ssl.SSLError) -> str:
    """A one-line reason for a TLS failure, e.g. the certificate verification message."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"PACS certificate not accepted: {exc.verify_message}"
    reason = exc.reason or str(exc)
    return f"TLS handshake failed: {str(reason).replace('_', ' ').lower()}"


def probe_connection(
    host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float
) -> SendOutcome:
    """Connect (and shake hands) once; the failure found, or a RETRY saying none was found."""
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return _retry(FailureClass.CONNECTION_REFUSED, f"connection refused by {where}")
    except TimeoutError:
        return _retry(FailureClass.TIMEOUT, f"no TCP connection to {where} within {timeout:g} s")
    except socket.gaierror as exc:
        return _retry(FailureClass.CONNECTION_REFUSED, f"cannot resolve {host}: {exc.strerror}")
    except OSError as exc:
        return _retry(FailureClass.CONNECTION_REFUSED, f"cannot connect to {where}: {exc.strerror}")
    with raw:
        if ssl_context is None:
            return _retry(
                FailureClass.CONNECTION_REFUSED,
                f"connection to {where} failed once, then succeeded on a second try",
            )
        try:
            with ssl_context.wrap_socket(raw, server_hostname=host):
                pass
        except ssl.SSLError as exc:
            return _retry(FailureClass.TLS, describe_tls_error(exc))
        except TimeoutError:
            return _retry(FailureClass.TLS, f"no TLS handshake from {where} within {timeout:g} s")
        except OSError as exc:
            return _retry(
                FailureClass.TLS,
                f"connection closed by {where} during the TLS handshake ({exc.strerror or exc})",
            )
    return _retry(
        FailureClass.TLS,
        f"TLS connection to {where} failed once, then succeeded on a second try",
    )
