"""Fixtures for the forwarder tests: destinations, TLS settings and self-stopping peers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gateway.config import Destination, TlsSettings
from tests.conftest import Pki
from tests.forward.scps import SilentPeer, StatusSCP


def make_destination(port: int, *, host: str = "127.0.0.1", **overrides: Any) -> Destination:
    """A destination with short timeouts, suitable for loopback peers."""
    fields: dict[str, Any] = {
        "name": "pacs",
        "ae_title": "PACS",
        "host": host,
        "port": port,
        "connect_timeout": 3.0,
        "acse_timeout": 3.0,
        "dimse_timeout": 10.0,
        "network_timeout": 5.0,
        "idle_release_seconds": 5.0,
    }
    fields.update(overrides)
    return Destination.model_validate(fields)


def tls_settings(pki: Pki, **overrides: Any) -> TlsSettings:
    """Mutual TLS with the gateway's test certificate, trusting the test CA."""
    fields: dict[str, Any] = {"ca": pki.ca, "cert": pki.gateway.cert, "key": pki.gateway.key}
    fields.update(overrides)
    return TlsSettings.model_validate(fields)


@pytest.fixture
def status_scp() -> Iterator[Callable[..., StatusSCP]]:
    """Start pynetdicom storage SCPs that are stopped when the test ends."""
    started: list[StatusSCP] = []

    def start(*args: Any, **kwargs: Any) -> StatusSCP:
        scp = StatusSCP(*args, **kwargs).start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


@pytest.fixture
def silent_peer() -> Iterator[SilentPeer]:
    """A server that accepts TCP and never speaks."""
    peer = SilentPeer().start()
    yield peer
    peer.stop()
