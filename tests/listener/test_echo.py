"""C-ECHO is answered over plain TCP and over TLS with a verified client certificate."""

from __future__ import annotations

from pathlib import Path

from gateway.forward.tlsctx import server_context
from gateway.pki import TestAuthority
from tests.conftest import Pki
from tests.harness import wait_until
from tests.listener.conftest import StartListener
from tests.listener.support import echoscu, listener_settings, server_tls


def test_echoscu_is_answered_over_plain_tcp(start_listener: StartListener) -> None:
    listener = start_listener(listener_settings())
    result = echoscu(listener.address[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert listener.stats()["accepted"] == 1


def test_echoscu_with_a_client_certificate_is_answered_over_tls(
    start_listener: StartListener, pki: Pki
) -> None:
    listener = start_listener(listener_settings(), ssl_context=server_context(server_tls(pki)))
    result = echoscu(listener.address[1], tls=(pki.ca, pki.pacs.cert, pki.pacs.key))
    assert result.returncode == 0, result.stdout + result.stderr
    assert listener.stats()["tls_failed"] == 0


def test_a_tls_caller_without_a_certificate_is_refused(
    start_listener: StartListener, pki: Pki
) -> None:
    listener = start_listener(listener_settings(), ssl_context=server_context(server_tls(pki)))
    result = echoscu(listener.address[1], anonymous_tls_ca=pki.ca)
    assert result.returncode != 0
    assert wait_until(lambda: listener.stats()["tls_failed"] == 1)


def test_a_tls_caller_signed_by_another_ca_is_refused(
    start_listener: StartListener, pki: Pki, tmp_path: Path
) -> None:
    stranger = TestAuthority(tmp_path / "other-ca", name="Stranger CA").issue("mod", "MODALITY")
    listener = start_listener(listener_settings(), ssl_context=server_context(server_tls(pki)))
    result = echoscu(listener.address[1], tls=(pki.ca, stranger.cert, stranger.key))
    assert result.returncode != 0
    assert wait_until(lambda: listener.stats()["tls_failed"] == 1)


def test_a_plain_caller_on_the_tls_port_is_refused(start_listener: StartListener, pki: Pki) -> None:
    listener = start_listener(listener_settings(), ssl_context=server_context(server_tls(pki)))
    result = echoscu(listener.address[1])
    assert result.returncode != 0
    assert wait_until(lambda: listener.stats()["tls_failed"] == 1)
