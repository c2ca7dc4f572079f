"""The TLS client context follows the BCP 195 profile and loads our credentials."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from gateway.forward.tlsctx import TlsSetupError, client_context
from tests.conftest import Pki
from tests.forward.conftest import tls_settings


def test_no_tls_below_1_2_is_offered(pki: Pki) -> None:
    context = client_context(tls_settings(pki))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.minimum_version > ssl.TLSVersion.TLSv1_1
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_min_version_1_3_is_honoured(pki: Pki) -> None:
    context = client_context(tls_settings(pki, min_version="1.3"))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3


def test_tls12_suites_are_forward_secret_aead_only(pki: Pki) -> None:
    suites = client_context(tls_settings(pki)).get_ciphers()
    tls12 = [s for s in suites if s["protocol"] == "TLSv1.2"]
    assert tls12, "some TLS 1.2 suites must remain"
    for suite in tls12:
        assert suite["aead"], suite["name"]
        assert suite["kea"] in ("kx-ecdhe", "kx-dhe"), suite["name"]
        assert suite["symmetric"] in (
            "aes-128-gcm",
            "aes-256-gcm",
            "chacha20-poly1305",
        ), suite["name"]
        assert suite["auth"] in ("auth-rsa", "auth-ecdsa"), suite["name"]


def test_hostname_check_follows_the_setting(pki: Pki) -> None:
    context = client_context(tls_settings(pki, verify_hostname=False))
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_key_is_found_in_the_credentials_directory(pki: Pki, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    shutil.copy(pki.gateway.key, creds / "gateway-key.pem")
    settings = tls_settings(pki, key=tmp_path / "elsewhere" / "gateway-key.pem")
    with pytest.raises(TlsSetupError):
        client_context(settings)
    assert isinstance(client_context(settings, credentials_dir=str(creds)), ssl.SSLContext)


def test_unreadable_ca_names_the_file(pki: Pki, tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match=r"not-a-ca\.pem"):
        client_context(tls_settings(pki, ca=bogus))
