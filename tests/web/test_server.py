"""The panel's HTTPS listener and certificate: TLS 1.2+ with BCP 195 suites only, no plain HTTP,
a self-signed ECDSA certificate made once and reused, [web] cert/key and installed ones used."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import WebSection
from gateway.pki import TestAuthority
from gateway.web.tlscert import (
    RENEW_DAYS,
    CertificateError,
    cert_paths,
    ensure_certificate,
    install_certificate,
)
from tests.conftest import Pki
from tests.web.panelkit import MakePanel, RunningPanel, panel_factory, services_for


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from panel_factory(tmp_path)


def _handshake(panel: RunningPanel, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", panel.panel.server.port), timeout=5)  # type: ignore[union-attr]
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def _client(**versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if "minimum" in versions:
        context.minimum_version = versions["minimum"]
    if "maximum" in versions:
        context.maximum_version = versions["maximum"]
    return context


def test_tls_1_2_negotiates_a_forward_secret_aead_suite(make_panel: MakePanel) -> None:
    panel = make_panel()
    with _handshake(panel, _client(maximum=ssl.TLSVersion.TLSv1_2)) as tls:
        assert tls.version() == "TLSv1.2"
        name = tls.cipher()[0]
        assert name.startswith("ECDHE-ECDSA-") and ("GCM" in name or "CHACHA20" in name)


def test_a_client_offering_only_cbc_suites_is_refused(make_panel: MakePanel) -> None:
    panel = make_panel()
    context = _client(maximum=ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    with pytest.raises(ssl.SSLError):
        _handshake(panel, context).close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(make_panel: MakePanel) -> None:
    panel = make_panel()
    context = _client(maximum=ssl.TLSVersion.TLSv1_1)
    context.set_ciphers("ALL:@SECLEVEL=0")  # let the client try; the server must say no
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(panel, context).close()


def test_plain_http_on_the_port_gets_no_page(make_panel: MakePanel) -> None:
    panel = make_panel()
    port = panel.panel.server.port  # type: ignore[union-attr]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_the_self_signed_certificate_names_the_box_and_its_key_is_private(
    make_panel: MakePanel,
) -> None:
    panel = make_panel()
    cert_path, key_path = cert_paths(panel.state)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.parent.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName))
    addresses = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    assert {"localhost", socket.gethostname()} <= names
    assert {"127.0.0.1", "::1"} <= addresses
    # The client that trusts exactly this certificate verifies the name 127.0.0.1.
    assert panel.browser().get("/healthz").status_code == 200


def test_the_certificate_is_reused_at_the_next_start(tmp_path: Path, make_panel: MakePanel) -> None:
    services, closers = services_for(tmp_path)
    try:
        first = make_panel(services)
        cert_path, key_path = cert_paths(first.state)
        before = (cert_path.read_bytes(), key_path.read_bytes())
        first.panel.stop()
        make_panel(services)
        assert (cert_path.read_bytes(), key_path.read_bytes()) == before
    finally:
        for close in closers:
            close()


def test_web_cert_and_key_from_the_configuration_are_served(
    make_panel: MakePanel, pki: Pki
) -> None:
    panel = make_panel(cert=str(pki.gateway.cert), key=str(pki.gateway.key))
    context = ssl.create_default_context(cafile=str(pki.ca))
    with _handshake(panel, context) as tls:
        peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    assert peer == x509.load_pem_x509_certificate(pki.gateway.cert.read_bytes())
    assert not cert_paths(panel.state)[0].exists()  # nothing self-signed was made


def test_an_installed_certificate_is_served_from_the_next_start(
    tmp_path: Path, make_panel: MakePanel, pki: Pki
) -> None:
    services, closers = services_for(tmp_path)
    try:
        first = make_panel(services)
        install_certificate(
            first.state, pki.gateway.cert.read_bytes(), pki.gateway.key.read_bytes()
        )
        first.panel.stop()
        second = make_panel(services)
        assert second.panel.certificate is not None
        assert not second.panel.certificate.self_signed
        with _handshake(second, ssl.create_default_context(cafile=str(pki.ca))) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        for close in closers:
            close()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_panel_cert_and_key_modes_are_the_documented_ones_whatever_the_umask(
    tmp_path: Path, pki: Pki, umask: int
) -> None:
    """docs/web.md: panel-cert.pem 0644 (public), panel-key.pem 0600, made or installed."""
    old = os.umask(umask)
    try:
        made = ensure_certificate(tmp_path / "made", WebSection())
        installed = install_certificate(
            tmp_path / "installed", pki.gateway.cert.read_bytes(), pki.gateway.key.read_bytes()
        )
    finally:
        os.umask(old)
    for pair in (made, installed):
        assert stat.S_IMODE(pair.cert.stat().st_mode) == 0o644
        assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600


def test_install_refuses_a_key_that_is_not_the_certificates(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(CertificateError, match="does not belong"):
        install_certificate(tmp_path, pki.gateway.cert.read_bytes(), pki.pacs.key.read_bytes())
    with pytest.raises(CertificateError, match="not PEM"):
        install_certificate(tmp_path, b"garbage", pki.pacs.key.read_bytes())
    assert not cert_paths(tmp_path)[0].exists()


def test_install_refuses_an_expired_certificate(tmp_path: Path) -> None:
    authority = TestAuthority(tmp_path / "ca")
    old = authority.issue(
        "old",
        "old",
        days=1,
        not_before=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3),
    )
    with pytest.raises(CertificateError, match="valid only"):
        install_certificate(tmp_path, old.cert.read_bytes(), old.key.read_bytes())


def test_stop_closes_the_port(make_panel: MakePanel) -> None:
    panel = make_panel()
    port = panel.panel.server.port  # type: ignore[union-attr]
    panel.panel.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_self_signed_certificate_near_expiry_is_renewed(tmp_path: Path) -> None:
    web = WebSection()
    first = ensure_certificate(tmp_path, web)
    same = ensure_certificate(tmp_path, web)
    assert same.cert.read_bytes() == first.cert.read_bytes()
    later = first.not_after - datetime.timedelta(days=RENEW_DAYS - 1)
    renewed = ensure_certificate(tmp_path, web, now=later)
    assert renewed.self_signed and renewed.not_after > first.not_after
