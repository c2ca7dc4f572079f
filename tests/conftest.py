"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from gateway.pki import CertFiles, TestAuthority
from tests.harness import GatewayProcess
from tests.peers import StoreSCP

# No per-example deadline in property tests: on a loaded CI machine one example stalled by the
# scheduler would fail a correctness test for a timing reason (speed is bench/'s business).
settings.register_profile("gateway", deadline=None)
settings.load_profile("gateway")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``deb`` tests (the real .deb built, lintian, apt in a chroot: minutes) run only when the
    marker expression names them (``make deb-test`` runs ``-m deb``); ``make test``, .ci/run and
    a bare ``pytest`` skip them, saying how to run them."""
    if "deb" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="builds and installs the .deb (minutes): make deb-test")
    for item in items:
        if item.get_closest_marker("deb") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _keep_umask() -> Iterator[None]:
    """`dicom-gateway` verbs that write state set the process umask (gateway.cli.STATE_UMASK);
    a test that calls cli.main() in-process must not change it for the tests after it."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


@dataclass(frozen=True)
class Pki:
    """A test CA with a certificate for the PACS and one for the gateway."""

    ca: Path
    pacs: CertFiles
    gateway: CertFiles
    authority: TestAuthority


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    authority = TestAuthority(tmp_path / "pki")
    return Pki(
        ca=authority.ca_file,
        pacs=authority.issue("pacs", "PACS"),
        gateway=authority.issue("gateway", "EDGE_GW"),
        authority=authority,
    )


@pytest.fixture
def storescp_factory(tmp_path: Path) -> Iterator[type[StoreSCP]]:
    """Build StoreSCP peers that are all stopped when the test ends."""
    started: list[StoreSCP] = []

    class Tracked(StoreSCP):
        def start(self) -> StoreSCP:
            started.append(self)
            return super().start()

    yield Tracked
    for peer in started:
        peer.stop()


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    """Daemons a test started (appended as it starts them); each is stopped at teardown."""
    started: list[GatewayProcess] = []
    yield started
    for gw in started:
        gw.stop()
