"""echo() reports what an engineer needs to see of a PACS link."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.forward.echo import echo
from gateway.forward.tlsctx import client_context
from tests.conftest import Pki
from tests.forward.conftest import make_destination, tls_settings
from tests.forward.scps import RestrictedArchive
from tests.peers import StoreSCP, free_port

pytestmark = pytest.mark.peers


def test_echo_over_tls_fills_the_report(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key)).start()
    destination = make_destination(peer.port, host="localhost", tls=tls_settings(pki))
    report = echo(destination, "EDGE_GW", client_context(tls_settings(pki)))
    assert report.ok, report.reason
    assert report.tls_version in ("TLSv1.2", "TLSv1.3")
    assert report.cipher
    assert report.peer_subject == "CN=PACS"
    assert report.peer_not_after is not None
    now = dt.datetime.now(dt.UTC)
    assert now < report.peer_not_after < now + dt.timedelta(days=31)
    assert (report.called_ae_title, report.calling_ae_title) == ("PACS", "EDGE_GW")
    assert report.peer_implementation_class_uid
    assert report.peer_implementation_class_uid.startswith("1.2.276.0.7230010.3")  # DCMTK
    assert report.peer_implementation_version_name
    assert report.peer_implementation_version_name.startswith("OFFIS_DCMTK")
    assert report.peer_max_pdu == 16384
    assert report.round_trip_ms is not None
    assert 0 < report.round_trip_ms < 5000


def test_echo_plain_has_no_tls_fields(tmp_path: Path, storescp_factory: type[StoreSCP]) -> None:
    peer = storescp_factory(tmp_path / "pacs").start()
    report = echo(make_destination(peer.port), "EDGE_GW", None)
    assert report.ok
    assert (report.tls_version, report.cipher, report.peer_subject) == (None, None, None)


def test_echo_to_nothing_says_why() -> None:
    report = echo(make_destination(free_port()), "EDGE_GW", None)
    assert not report.ok
    assert "refused" in report.reason
    assert report.round_trip_ms is None


def test_echo_to_an_archive_that_does_not_know_us_says_what_to_ask_for(tmp_path: Path) -> None:
    # Issue 11 item 15: `dicom-gateway echo` is the first check of docs/troubleshooting.md.
    archive = RestrictedArchive(tmp_path, called="PACS", calling="OTHER_GW").start()
    try:
        report = echo(make_destination(archive.port), "EDGE_GW", None)
    finally:
        archive.stop()
    assert not report.ok
    assert "ask the PACS administrator to add AE title EDGE_GW at 127.0.0.1" in report.reason
    assert "rejected (permanent) by service-user" in report.reason
