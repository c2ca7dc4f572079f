"""The panel's TLS certificate: [web] cert/key if set, else a self-signed pair made on first start.

The self-signed pair lives in ``<state_dir>/web/`` (``panel-cert.pem`` 0644, ``panel-key.pem``
0600) and is reused at every start until it is within ``RENEW_DAYS`` of expiry. Its key is
ECDSA P-256; its subject alternative names are the box's host name (and FQDN), every address on
its interfaces, and localhost, so a browser's warning is about trust only, not about the name.
:func:`install_certificate` replaces it with a certificate signed by the site's CA (the
certificates screen calls it; the panel loads it at its next start).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.appliance.netlive import local_ipv4, local_ipv6
from gateway.config import WebSection, resolve_key_path
from gateway.spool.durable import write_bytes_durably
from gateway.web.auth.db import web_dir, write_private

CERT_FILE = "panel-cert.pem"
KEY_FILE = "panel-key.pem"
CERT_MODE = 0o644  # public; the key is 0600 (write_private)
VALID_DAYS = 825  # the longest lifetime browsers have accepted for a server certificate
RENEW_DAYS = 30

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message says why (never key material)."""


@dataclass(frozen=True)
class PanelCertificate:
    """The files the panel serves with."""

    cert: Path
    key: Path
    self_signed: bool  # generated on the box (not from [web] cert/key or install_certificate)
    not_after: datetime.datetime  # UTC


def cert_paths(state_dir: Path) -> tuple[Path, Path]:
    """Where the panel's own certificate and key are kept."""
    folder = web_dir(state_dir)
    return folder / CERT_FILE, folder / KEY_FILE


def ensure_certificate(
    state_dir: Path,
    web: WebSection,
    credentials_dir: str | None = None,
    now: datetime.datetime | None = None,
) -> PanelCertificate:
    """The certificate to serve: [web]'s, else the one in state_dir, made or renewed if needed."""
    now = now or datetime.datetime.now(datetime.UTC)
    if web.cert is not None and web.key is not None:
        key = resolve_key_path(web.key, credentials_dir)
        return PanelCertificate(web.cert, key, False, _read_cert(web.cert).not_valid_after_utc)
    cert_path, key_path = cert_paths(state_dir)
    if cert_path.exists() and key_path.exists():
        try:
            cert = _read_cert(cert_path)
        except CertificateError:
            cert = None  # unreadable: replaced below
        if cert is not None and _key_matches(cert, key_path):
            self_signed = _is_self_signed(cert)
            fresh = cert.not_valid_after_utc - now > datetime.timedelta(RENEW_DAYS)
            # An installed certificate is never replaced here: the certificates screen warns
            # before it expires, and a self-signed one would break the site's trust.
            if fresh or not self_signed:
                return PanelCertificate(cert_path, key_path, self_signed, cert.not_valid_after_utc)
    names, addresses = local_names_and_addresses(web.bind)
    not_after = generate_self_signed(cert_path, key_path, names, addresses, now)
    return PanelCertificate(cert_path, key_path, True, not_after)


def generate_self_signed(
    cert_path: Path,
    key_path: Path,
    names: Iterable[str],
    addresses: Iterable[IpAddress],
    now: datetime.datetime,
) -> datetime.datetime:
    """Write a new ECDSA P-256 key (0600) and a self-signed certificate for these names."""
    dns = sorted(set(names) | {"localhost"})
    ips = sorted(
        set(addresses) | {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")},
        key=lambda a: (a.version, int(a)),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, dns[0][:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DICOM edge gateway (self-signed)"),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(a) for a in ips]
    not_after = now + datetime.timedelta(days=VALID_DAYS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a clock a little behind
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _store(cert_path, key_path, cert.public_bytes(serialization.Encoding.PEM), key_pem)
    return cert.not_valid_after_utc


def install_certificate(state_dir: Path, cert_pem: bytes, key_pem: bytes) -> PanelCertificate:
    """Replace the panel's certificate (PEM chain, leaf first) and key; used from its next start.

    Refused unless the key is the certificate's, the leaf is valid now and is a server
    certificate. With [web] cert/key set in the configuration, those files win over these.
    """
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError("the certificate is not PEM (-----BEGIN CERTIFICATE-----)") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError("the key is not an unencrypted PEM private key") from None
    leaf = chain[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise CertificateError("the key does not belong to the (first) certificate")
    now = datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        raise CertificateError(
            f"the certificate is valid only from {leaf.not_valid_before_utc:%Y-%m-%d} "
            f"to {leaf.not_valid_after_utc:%Y-%m-%d}"
        )
    cert_path, key_path = cert_paths(state_dir)
    _store(cert_path, key_path, cert_pem, key_pem)
    return PanelCertificate(cert_path, key_path, False, leaf.not_valid_after_utc)


def local_names_and_addresses(bind: str = "0.0.0.0") -> tuple[set[str], set[IpAddress]]:  # noqa: S104
    """The box's host name(s) and its interface addresses (Linux /proc), loopback included."""
    names = {socket.gethostname()}
    fqdn = socket.getfqdn()
    if fqdn and "." in fqdn:
        names.add(fqdn)
    names = {n for n in names if n and n.isascii()}
    addresses: set[IpAddress] = set()
    with contextlib.suppress(ValueError):
        addresses.add(ipaddress.ip_address(bind))
    addresses = {a for a in addresses if not a.is_unspecified}
    addresses |= _proc_ipv4() | _proc_ipv6()
    return names, addresses


def _proc_ipv4() -> set[IpAddress]:
    return set(local_ipv4(Path("/")))


def _proc_ipv6() -> set[IpAddress]:
    # A browser cannot name fe80:: without a zone anyway.
    return {a for _, a in local_ipv6(Path("/")) if not a.is_link_local}


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError) as exc:
        raise CertificateError(f"{path}: not a readable PEM certificate ({exc})") from None


def _spki(public_key: object) -> bytes:
    assert hasattr(public_key, "public_bytes")
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _key_matches(cert: x509.Certificate, key_path: Path) -> bool:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    return _spki(key.public_key()) == _spki(cert.public_key())


def _is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _store(cert_path: Path, key_path: Path, cert_pem: bytes, key_pem: bytes) -> None:
    """Key first (0600), then the certificate (0644): a crash between leaves a pair that fails
    to load together and is regenerated, never a certificate served with a stranger's key.

    Both modes are set exactly, whatever the umask: the key is secret; the certificate is what
    every browser is sent anyway (readable to copy it for a scraper's trust store).
    """
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    write_private(key_path, key_pem.decode("ascii"))
    write_bytes_durably(cert_path, cert_pem, CERT_MODE)
