"""Every way a delivery fails becomes an outcome with a class and a reason, never a hang."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage

from gateway.clock import FakeClock
from gateway.forward.outcome import FailureClass, OutcomeKind, SendOutcome
from gateway.forward.sender import StoreSender
from gateway.forward.tlsctx import client_context
from gateway.pki import TestAuthority
from tests.conftest import Pki
from tests.forward.conftest import make_destination, tls_settings
from tests.forward.objects import entry_for, write_ct, write_jpeg_sc
from tests.forward.scps import RestrictedArchive, SilentPeer, StatusSCP
from tests.peers import StoreSCP, free_port

pytestmark = pytest.mark.peers


def _send_once(sender: StoreSender, path: Path) -> SendOutcome:
    try:
        return sender.send(entry_for(path))
    finally:
        sender.close()


def test_pacs_down_is_connection_refused(tmp_path: Path) -> None:
    sender = StoreSender(make_destination(free_port()), "EDGE_GW", None, FakeClock())
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.CONNECTION_REFUSED
    assert "refused" in outcome.reason


def test_silent_pacs_times_out_instead_of_hanging(tmp_path: Path, silent_peer: SilentPeer) -> None:
    destination = make_destination(silent_peer.port, connect_timeout=1.0, acse_timeout=1.0)
    sender = StoreSender(destination, "EDGE_GW", None, FakeClock())
    started = time.monotonic()
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert time.monotonic() - started < 10.0  # a hang, not a slow machine, would fail this
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.TIMEOUT
    assert "within 1 s" in outcome.reason


def test_silent_pacs_times_out_in_the_tls_handshake(
    tmp_path: Path, pki: Pki, silent_peer: SilentPeer
) -> None:
    """The reproduced trap: the handshake runs inside connect, guarded by connect_timeout."""
    destination = make_destination(
        silent_peer.port, host="localhost", tls=tls_settings(pki), connect_timeout=1.0
    )
    sender = StoreSender(destination, "EDGE_GW", client_context(tls_settings(pki)), FakeClock())
    started = time.monotonic()
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert time.monotonic() - started < 3.0
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class in (FailureClass.TIMEOUT, FailureClass.TLS)
    assert "TLS handshake" in outcome.reason


def _tls_peer(
    tmp_path: Path, pki: Pki, factory: type[StoreSCP], server_cert_hosts: tuple[str, ...] | None
) -> StoreSCP:
    cert = pki.pacs
    if server_cert_hosts is not None:
        cert = pki.authority.issue("pacs-other", "PACS", hosts=server_cert_hosts)
    return factory(tmp_path / "pacs", tls=(pki.ca, cert.cert, cert.key)).start()


def test_untrusted_server_certificate_is_a_tls_failure(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP]
) -> None:
    peer = _tls_peer(tmp_path, pki, storescp_factory, None)
    stranger = TestAuthority(tmp_path / "stranger", name="Stranger CA")
    settings = tls_settings(pki, ca=stranger.ca_file)
    destination = make_destination(peer.port, host="localhost", tls=settings)
    sender = StoreSender(destination, "EDGE_GW", client_context(settings), FakeClock())
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.TLS
    assert "certificate" in outcome.reason
    assert peer.received() == []


def test_certificate_for_another_host_is_a_tls_failure_when_hostnames_are_checked(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP]
) -> None:
    peer = _tls_peer(tmp_path, pki, storescp_factory, ("pacs.example.org",))
    destination = make_destination(peer.port, host="localhost", tls=tls_settings(pki))
    sender = StoreSender(destination, "EDGE_GW", client_context(tls_settings(pki)), FakeClock())
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert outcome.failure_class is FailureClass.TLS
    assert "Hostname mismatch" in outcome.reason

    lenient = tls_settings(pki, verify_hostname=False)
    destination = make_destination(peer.port, host="localhost", tls=lenient)
    sender = StoreSender(destination, "EDGE_GW", client_context(lenient), FakeClock())
    assert _send_once(sender, write_ct(tmp_path / "ct2.dcm")).kind is OutcomeKind.DELIVERED


def test_client_certificate_the_pacs_does_not_trust_fails(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP]
) -> None:
    peer = _tls_peer(tmp_path, pki, storescp_factory, None)
    rogue = TestAuthority(tmp_path / "rogue", name="Rogue CA").issue("edge", "EDGE_GW")
    settings = tls_settings(pki, cert=rogue.cert, key=rogue.key)
    destination = make_destination(peer.port, host="localhost", tls=settings)
    sender = StoreSender(destination, "EDGE_GW", client_context(settings), FakeClock())
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.TLS
    assert peer.received() == []


def test_rejected_association_is_described_in_words(
    tmp_path: Path, status_scp: Callable[..., StatusSCP]
) -> None:
    scp = status_scp([CTImageStorage], require_called_aet=True)
    destination = make_destination(scp.port, ae_title="NOT_THE_PACS")
    sender = StoreSender(destination, "EDGE_GW", None, FakeClock())
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert outcome.kind is OutcomeKind.RETRY  # kept: a person fixes it, nothing is lost
    # Permanent (issue 11 item 15): a configuration error, not "unreachable" for ever.
    assert outcome.failure_class is FailureClass.ASSOCIATION_REJECTED_PERMANENT
    assert "rejected (permanent) by service-user: called AE title not recognised" in outcome.reason
    assert "called AE title NOT_THE_PACS not recognised" in outcome.reason


def test_our_calling_ae_title_unknown_to_the_pacs_says_whom_to_ask_for_what(
    tmp_path: Path, status_scp: Callable[..., StatusSCP]
) -> None:
    scp = status_scp([CTImageStorage], require_calling_aet=["MODALITY_1"])
    sender = StoreSender(make_destination(scp.port), "EDGE_GW", None, FakeClock())
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.failure_class is FailureClass.ASSOCIATION_REJECTED_PERMANENT
    assert outcome.reason.startswith(
        "PACS rejected our AE title: calling AE title not recognised — "
        "ask the PACS administrator to add AE title EDGE_GW at 127.0.0.1"
    ), outcome.reason
    assert scp.stored == []


def test_a_dcmtk_archive_that_does_not_know_us_is_a_permanent_rejection(tmp_path: Path) -> None:
    archive = RestrictedArchive(tmp_path, called="PACS", calling="OTHER_GW").start()
    ct = write_ct(tmp_path / "ct.dcm")
    try:
        sender = StoreSender(make_destination(archive.port), "EDGE_GW", None, FakeClock())
        # Ten tries: pynetdicom loses about one fast rejection in five (gateway/forward/link.py).
        outcomes = [_send_once(sender, ct) for _ in range(10)]
    finally:
        archive.stop()
    assert {o.failure_class for o in outcomes} == {FailureClass.ASSOCIATION_REJECTED_PERMANENT}
    outcome = outcomes[0]
    assert outcome.kind is OutcomeKind.RETRY
    # DCMTK says "called" for an unknown caller: the advice covers both sides.
    assert "called AE title PACS not recognised" in outcome.reason, outcome.reason
    assert "ask the PACS administrator to add AE title EDGE_GW at 127.0.0.1" in outcome.reason
    assert "Refusing Association" in archive.log()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (0xA700, OutcomeKind.RETRY),  # out of resources: the whole PACS's, retried (B12)
        (0xC000, OutcomeKind.REFUSED),
        (0x0110, OutcomeKind.RETRY),
        (0xB000, OutcomeKind.DELIVERED),
    ],
)
def test_pacs_status_decides_the_outcome(
    tmp_path: Path, status_scp: Callable[..., StatusSCP], status: int, kind: OutcomeKind
) -> None:
    scp = status_scp([CTImageStorage], status=status)
    sender = StoreSender(make_destination(scp.port), "EDGE_GW", None, FakeClock())
    outcome = _send_once(sender, write_ct(tmp_path / "ct.dcm"))
    assert outcome.kind is kind
    assert outcome.status == status
    if kind is not OutcomeKind.DELIVERED:
        expected = FailureClass.OUT_OF_RESOURCES if status == 0xA700 else FailureClass.DIMSE_FAILURE
        assert outcome.failure_class is expected
    assert f"0x{status:04X}" in outcome.reason


def test_sop_class_the_pacs_does_not_take_is_refused(
    tmp_path: Path, status_scp: Callable[..., StatusSCP]
) -> None:
    scp = status_scp([CTImageStorage])
    sender = StoreSender(make_destination(scp.port), "EDGE_GW", None, FakeClock())
    sc = write_jpeg_sc(tmp_path / "sc.dcm")

    alone = sender.send(entry_for(sc))  # the only context proposed: association has none
    assert alone.kind is OutcomeKind.REFUSED
    assert alone.failure_class is FailureClass.NO_PRESENTATION_CONTEXT

    assert sender.send(entry_for(write_ct(tmp_path / "ct.dcm"))).kind is OutcomeKind.DELIVERED
    beside = sender.send(entry_for(sc, delivery_id=2))  # proposed beside CT, refused there
    sender.close()
    assert beside.kind is OutcomeKind.REFUSED
    assert beside.failure_class is FailureClass.NO_PRESENTATION_CONTEXT
    assert "Secondary Capture" in beside.reason
    # the refused class was proposed again beside CT, in the union
    assert any(pair[0] == str(SecondaryCaptureImageStorage) for pair in scp.requested[-1])


def test_missing_or_mismatched_file_is_refused_as_unreadable(
    tmp_path: Path, status_scp: Callable[..., StatusSCP]
) -> None:
    scp = status_scp([CTImageStorage])
    sender = StoreSender(make_destination(scp.port), "EDGE_GW", None, FakeClock())
    path = write_ct(tmp_path / "ct.dcm")
    entry = entry_for(path)
    path.unlink()
    missing = sender.send(entry)
    assert (missing.kind, missing.failure_class) == (OutcomeKind.REFUSED, FailureClass.UNREADABLE)

    other = write_ct(tmp_path / "other.dcm")
    swapped = entry_for(write_ct(tmp_path / "ct.dcm"))
    wrong = sender.send(type(swapped)(**{**swapped.__dict__, "path": other}))
    sender.close()
    assert (wrong.kind, wrong.failure_class) == (OutcomeKind.REFUSED, FailureClass.UNREADABLE)
    assert scp.stored == []
