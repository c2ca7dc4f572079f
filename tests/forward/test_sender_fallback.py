"""Transfer syntax negotiation: as stored when accepted, decoded when only uncompressed is taken."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)

from gateway.clock import FakeClock
from gateway.forward.outcome import FailureClass, OutcomeKind
from gateway.forward.sender import StoreSender
from tests.forward.conftest import make_destination
from tests.forward.objects import entry_for, write_ct, write_jpeg_sc, write_undecodable
from tests.forward.scps import StatusSCP
from tests.harness import wait_until
from tests.peers import StoreSCP

pytestmark = pytest.mark.peers


def _received(peer: StoreSCP, sop_instance_uid: str) -> Path:
    matches = [p for p in peer.received() if sop_instance_uid in p.name]
    assert len(matches) == 1, peer.received()
    return matches[0]


def test_jpeg_refused_by_the_pacs_is_decoded_to_explicit_little_endian(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs").start()  # default: uncompressed syntaxes only
    sent = write_jpeg_sc(tmp_path / "sc.dcm")
    sender = StoreSender(make_destination(peer.port), "EDGE_GW", None, FakeClock())
    outcome = sender.send(entry_for(sent))
    sender.close()
    assert outcome.kind is OutcomeKind.DELIVERED, outcome
    assert "decoded from JPEG Baseline" in outcome.reason

    original = dcmread(sent)
    received = dcmread(_received(peer, original.SOPInstanceUID))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.SOPInstanceUID == original.SOPInstanceUID  # same instance, new syntax
    assert received.PhotometricInterpretation == "RGB"
    assert received.LossyImageCompression == "01"
    expected = original.pixel_array  # the same decoder, converted to RGB
    assert np.array_equal(received.pixel_array, expected)


def test_jpeg_accepted_by_the_pacs_is_sent_as_stored(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs", extra_args=["+xa"]).start()
    sent = write_jpeg_sc(tmp_path / "sc.dcm")
    sender = StoreSender(make_destination(peer.port), "EDGE_GW", None, FakeClock())
    outcome = sender.send(entry_for(sent))
    sender.close()
    assert outcome.kind is OutcomeKind.DELIVERED
    assert outcome.reason == ""
    original = dcmread(sent)
    received = dcmread(_received(peer, original.SOPInstanceUID))
    assert received.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert received.PixelData == original.PixelData


def test_undecodable_object_for_an_uncompressed_only_pacs_is_refused(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs").start()
    sender = StoreSender(make_destination(peer.port), "EDGE_GW", None, FakeClock())
    outcome = sender.send(entry_for(write_undecodable(tmp_path / "j2k.dcm")))
    sender.close()
    assert outcome.kind is OutcomeKind.REFUSED
    assert outcome.failure_class is FailureClass.NO_PRESENTATION_CONTEXT
    assert "JPEG 2000" in outcome.reason
    assert "cannot decode" in outcome.reason
    assert peer.received() == []


def test_explicit_vr_object_goes_to_an_implicit_only_pacs_re_encoded(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(tmp_path / "pacs", extra_args=["+xi"]).start()
    sent = write_ct(tmp_path / "ct.dcm")
    sender = StoreSender(make_destination(peer.port), "EDGE_GW", None, FakeClock())
    outcome = sender.send(entry_for(sent))
    sender.close()
    assert outcome.kind is OutcomeKind.DELIVERED, outcome
    received = dcmread(_received(peer, dcmread(sent).SOPInstanceUID))
    assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert received.PixelData == dcmread(sent).PixelData


def test_new_context_triggers_a_release_and_an_association_proposing_the_union(
    tmp_path: Path, status_scp: Callable[..., StatusSCP]
) -> None:
    scp = status_scp(
        [CTImageStorage, SecondaryCaptureImageStorage],
        syntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit],
    )
    sender = StoreSender(make_destination(scp.port), "EDGE_GW", None, FakeClock())
    ct, sc = write_ct(tmp_path / "ct.dcm"), write_jpeg_sc(tmp_path / "sc.dcm")
    assert sender.send(entry_for(ct, 1)).kind is OutcomeKind.DELIVERED
    assert sender.send(entry_for(sc, 2)).kind is OutcomeKind.DELIVERED
    assert sender.send(entry_for(write_ct(tmp_path / "ct2.dcm"), 3)).kind is OutcomeKind.DELIVERED
    sender.close()
    assert scp.established == 2  # CT + CT reuse the second association
    # pynetdicom answers A-RELEASE before its EVT_RELEASED handler counts it.
    assert wait_until(lambda: scp.released == 2, 5)  # released gracefully, not aborted
    first, second = (set(r) for r in scp.requested)
    ct_pairs = {(str(CTImageStorage), str(ExplicitVRLittleEndian))}
    sc_pairs = {(str(SecondaryCaptureImageStorage), str(JPEGBaseline8Bit))}
    assert ct_pairs <= first and not sc_pairs <= first
    assert ct_pairs | sc_pairs <= second
    assert len(scp.stored) == 3
