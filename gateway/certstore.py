"""Certificates on the box: inspect TLS files, make a key and CSR here, install the signed result.

Keys are generated on the box (ECDSA P-256) into ``<state_dir>/tls/<name>.key`` with mode 0600
and never leave it: only the CSR (``<name>.csr``) is offered for download. The signed
certificate is installed as ``<name>.pem`` (with any intermediates) and the CA bundle as
``<name>-ca.pem`` after two checks: the certificate holds our key's public half, and it chains
to a certificate in the bundle. Pure file and crypto logic; the web page drives it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.configstore import write_durably

TLS_DIR = "tls"
WARN_DAYS = 30
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_CHAIN = 8


class CertificateError(ValueError):
    """The request or the uploaded files cannot be used; the message says why."""


@dataclass(frozen=True)
class CertInfo:
    """What an engineer needs to know of one certificate file."""

    path: Path
    role: str  # "panel certificate", "destination pacs: cert", ...
    subject: str
    issuer: str
    not_after: dt.datetime | None
    days_left: int | None
    problem: str  # "" or why the file could not be read

    @property
    def warning(self) -> bool:
        """Expired, expiring within WARN_DAYS, or unreadable."""
        return bool(self.problem) or (self.days_left is not None and self.days_left < WARN_DAYS)


def inspect(path: Path, role: str, now: dt.datetime) -> CertInfo:
    """The first certificate of a PEM file (never a key: callers pass certificate files only)."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except FileNotFoundError:
        return CertInfo(path, role, "", "", None, None, "file not found")
    except (OSError, ValueError) as exc:
        return CertInfo(path, role, "", "", None, None, f"not a PEM certificate ({exc})")
    cert = certs[0]
    left = (cert.not_valid_after_utc - now).days
    return CertInfo(
        path,
        role,
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        cert.not_valid_after_utc,
        left,
        "expired" if left < 0 else "",
    )


class CertStore:
    """Keys, CSRs and installed certificates under ``<state_dir>/tls``."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / TLS_DIR

    def paths(self, name: str) -> dict[str, Path]:
        """The files of one name: key, csr, cert, ca."""
        _check_name(name)
        return {
            "key": self.folder / f"{name}.key",
            "csr": self.folder / f"{name}.csr",
            "cert": self.folder / f"{name}.pem",
            "ca": self.folder / f"{name}-ca.pem",
        }

    def names(self) -> list[str]:
        """Every name that has a key here."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.key") if NAME_RE.match(p.stem))

    def generate(self, name: str, common_name: str, hosts: list[str]) -> bytes:
        """A new key (replacing none: refuse if one exists) and its CSR; returns the CSR PEM."""
        files = self.paths(name)
        if files["key"].exists():
            raise CertificateError(f"a key named {name} exists already; choose another name")
        if not common_name.strip() or len(common_name) > 64:
            raise CertificateError("the common name is 1 to 64 characters")
        key = ec.generate_private_key(ec.SECP256R1())
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name.strip())])
        )
        sans = _general_names(hosts)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        csr = builder.sign(key, hashes.SHA256())
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_durably(files["key"], key_pem, 0o600)
        csr_pem = csr.public_bytes(serialization.Encoding.PEM)
        write_durably(files["csr"], csr_pem, 0o644)
        return csr_pem

    def csr(self, name: str) -> bytes | None:
        """The CSR of a name, or None."""
        path = self.paths(name)["csr"]
        return path.read_bytes() if path.is_file() else None

    def install(self, name: str, cert_pem: str, ca_pem: str) -> CertInfo:
        """Check the signed certificate against our key and the CA bundle, then store both."""
        files = self.paths(name)
        if not files["key"].is_file():
            raise CertificateError(f"no key named {name} on this box: generate a CSR first")
        try:
            chain = x509.load_pem_x509_certificates(cert_pem.encode())
        except ValueError:
            raise CertificateError(
                "the certificate is not PEM (-----BEGIN CERTIFICATE-----)"
            ) from None
        try:
            bundle = x509.load_pem_x509_certificates(ca_pem.encode())
        except ValueError:
            raise CertificateError(
                "the CA bundle is not PEM (-----BEGIN CERTIFICATE-----)"
            ) from None
        key = serialization.load_pem_private_key(files["key"].read_bytes(), password=None)
        leaf = chain[0]
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise CertificateError(f"the certificate does not belong to the key {name}")
        _check_chain(leaf, chain[1:], bundle)
        now = dt.datetime.now(dt.UTC)
        if leaf.not_valid_after_utc < now:
            raise CertificateError("the certificate has expired")
        write_durably(files["cert"], cert_pem.encode(), 0o644)
        write_durably(files["ca"], ca_pem.encode(), 0o644)
        return inspect(files["cert"], name, now)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise CertificateError("a name is letters, digits, '_', '.', '-' (at most 64)")


def _general_names(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in (h.strip() for h in hosts):
        if not host:
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*][A-Za-z0-9.-]{0,252}", host):
                raise CertificateError(f"not a host name or address: {host!r}") from None
            out.append(x509.DNSName(host))
    return out


def _check_chain(
    leaf: x509.Certificate, intermediates: list[x509.Certificate], bundle: list[x509.Certificate]
) -> None:
    """The leaf, through the intermediates, is signed by a certificate in the bundle."""
    current = leaf
    pool = intermediates + bundle
    for _ in range(MAX_CHAIN):
        if any(_issued_by(current, ca) for ca in bundle):
            return
        parent = next((c for c in pool if c is not current and _issued_by(current, c)), None)
        if parent is None:
            break
        current = parent
    raise CertificateError("the certificate does not chain to the CA bundle")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
