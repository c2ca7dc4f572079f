"""StoreSender delivers to DCMTK storescp, plain and over mutual TLS, reusing associations."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from gateway.clock import FakeClock
from gateway.forward.link import Connector, Link
from gateway.forward.outcome import OutcomeKind
from gateway.forward.sender import StoreSender
from gateway.forward.tlsctx import client_context
from tests.conftest import Pki
from tests.forward.conftest import make_destination, tls_settings
from tests.forward.objects import entry_for, write_ct
from tests.peers import StoreSCP

pytestmark = pytest.mark.peers


def _assert_received_equal(peer: StoreSCP, sent: Path) -> None:
    original = dcmread(sent)
    matches = [p for p in peer.received() if original.SOPInstanceUID in p.name]
    assert len(matches) == 1, peer.received()
    received = dcmread(matches[0])
    assert received.SOPInstanceUID == original.SOPInstanceUID
    assert received.PixelData == original.PixelData


def test_plain_delivery_arrives_unchanged(tmp_path: Path, storescp_factory: type[StoreSCP]) -> None:
    peer = storescp_factory(tmp_path / "pacs").start()
    sent = write_ct(tmp_path / "ct.dcm")
    sender = StoreSender(make_destination(peer.port), "EDGE_GW", None, FakeClock())
    outcome = sender.send(entry_for(sent))
    sender.close()
    assert outcome.kind is OutcomeKind.DELIVERED, outcome
    assert outcome.status == 0
    _assert_received_equal(peer, sent)


def test_mutual_tls_delivery_arrives_unchanged(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key)).start()
    sent = write_ct(tmp_path / "ct.dcm")
    destination = make_destination(peer.port, host="localhost", tls=tls_settings(pki))
    sender = StoreSender(destination, "EDGE_GW", client_context(tls_settings(pki)), FakeClock())
    outcome = sender.send(entry_for(sent))
    sender.close()
    assert outcome.kind is OutcomeKind.DELIVERED, outcome
    _assert_received_equal(peer, sent)


def test_objects_share_one_association_until_idle_release(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs", extra_args=["-v"]).start()
    clock = FakeClock()
    sender = StoreSender(
        make_destination(peer.port, idle_release_seconds=5.0), "EDGE_GW", None, clock
    )
    files = [write_ct(tmp_path / f"ct{i}.dcm") for i in range(3)]
    for i, path in enumerate(files):
        assert sender.send(entry_for(path, delivery_id=i)).kind is OutcomeKind.DELIVERED
        clock.advance(1.0)
        sender.release_if_idle()  # not idle long enough: kept
    assert peer.log().count("Association Acknowledged") == 1
    assert "Association Release" not in peer.log()

    clock.advance(5.0)
    sender.release_if_idle()
    assert "Association Release" in peer.log()  # graceful A-RELEASE, not an abort
    assert "Abort" not in peer.log()

    again = write_ct(tmp_path / "again.dcm")
    assert sender.send(entry_for(again, delivery_id=9)).kind is OutcomeKind.DELIVERED
    sender.close()
    assert peer.log().count("Association Acknowledged") == 2
    assert len(peer.received()) == 4


def test_association_socket_has_nodelay_and_a_timeout(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs").start()
    destination = make_destination(peer.port, network_timeout=7.0)
    link = Connector(destination, "EDGE_GW", None).open(
        [(str(CTImageStorage), str(ExplicitVRLittleEndian))]
    )
    assert isinstance(link, Link)
    try:
        sock = link.socket
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        # pynetdicom leaves the connected socket without a timeout; a stalled PACS would block
        assert sock.gettimeout() == 7.0
    finally:
        link.release()
