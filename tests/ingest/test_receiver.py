"""Inbound C-STORE: Success only once the object is in the spool; bad objects kept aside."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage

from gateway import product
from gateway.clock import SystemClock
from gateway.convert.result import ConvertedObject
from gateway.forward.tlsctx import server_context
from gateway.ingest.quarantine import Quarantine
from gateway.ingest.receiver import Prepare, StoreReceiver
from gateway.listener.server import DicomListener
from gateway.spool.space import Room
from gateway.spool.store import Spool
from gateway.storagefault import StorageNotReadyError
from tests.conftest import Pki
from tests.forward.objects import write_ct, write_jpeg_sc
from tests.harness import wait_until
from tests.listener.support import (
    LISTENER_AE,
    echoscu,
    listener_settings,
    server_tls,
)
from tests.peers import require_tool


@dataclass
class Gateway:
    """A listener with the storage service over a real spool and quarantine."""

    listener: DicomListener
    receiver: StoreReceiver
    spool: Spool
    quarantine: Quarantine
    state: Path

    @property
    def port(self) -> int:
        return self.listener.address[1]

    def queued(self) -> list[int]:
        """Object ids committed to the queue, read through a second connection."""
        reader = Spool(self.state, ["pacs"], 1 << 40, SystemClock())
        reader.open(recover=False)
        try:
            return sorted({d.object_id for d in reader.list_deliveries(limit=1000)})
        finally:
            reader.close()

    def staging_files(self) -> list[Path]:
        return sorted(self.spool.staging_dir.iterdir())


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[object]:
    """Build gateways (listener + receiver + spool); all stopped at teardown."""
    started: list[Gateway] = []

    def build(
        *,
        max_bytes: int = 1 << 30,
        prepare: Prepare | None = None,
        ssl_pki: Pki | None = None,
        spool: Spool | None = None,
    ) -> Gateway:
        state = tmp_path / f"state{len(started)}"
        real = Spool(state, ["pacs"], max_bytes, SystemClock())
        real.open()
        quarantine = Quarantine(state / "quarantine", SystemClock())
        receiver = StoreReceiver(
            spool or real,
            quarantine,
            prepare=prepare,
            logger=logging.getLogger("test.receiver"),
        )
        context = server_context(server_tls(ssl_pki)) if ssl_pki else None
        listener = DicomListener(
            listener_settings(),
            LISTENER_AE,
            context,
            [receiver.service()],
            logging.getLogger("test.listener"),
        )
        listener.start()
        built = Gateway(listener, receiver, real, quarantine, state)
        started.append(built)
        return built

    yield build
    for built in started:
        built.listener.stop()
        built.spool.close()


def storescu(
    port: int,
    path: Path,
    *,
    tls: tuple[Path, Path, Path] | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    args = [require_tool("storescu"), "-aet", "MODALITY", "-aec", LISTENER_AE, "-to", "5", *extra]
    if tls is not None:
        ca, cert, key = tls
        args += ["+tls", str(key), str(cert), "-pw", "+cf", str(ca)]
    args += ["127.0.0.1", str(port), str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def send_raw(port: int, path: Path) -> Dataset:
    """C-STORE the file's bytes as they are (pynetdicom chunked send); the response status."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    assert assoc.is_established
    try:
        status: Dataset = assoc.send_c_store(path)
    finally:
        assoc.release()
    return status


def test_storescu_gets_success_only_once_the_object_is_in_the_spool(
    gateway_factory: object, tmp_path: Path
) -> None:
    gw = gateway_factory()  # type: ignore[operator]
    source = write_ct(tmp_path / "ct.dcm")
    result = storescu(gw.port, source)
    assert result.returncode == 0, result.stdout + result.stderr
    queued = gw.queued()
    assert len(queued) == 1
    info = gw.spool.show(queued[0])
    assert info is not None and info.payload is not None
    original = dcmread(source)
    stored = dcmread(info.payload)
    assert info.sop_instance_uid == original.SOPInstanceUID
    assert info.kind == "dicom-store"
    assert info.source == "dicom:MODALITY"
    assert stored.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert stored.file_meta.ImplementationClassUID == product.IMPLEMENTATION_CLASS_UID
    assert stored.file_meta.ImplementationVersionName == product.IMPLEMENTATION_VERSION_NAME
    assert stored.PixelData == original.PixelData
    assert wait_until(lambda: gw.staging_files() == [])


def test_storescu_over_tls_with_a_client_certificate_is_stored(
    gateway_factory: object, tmp_path: Path, pki: Pki
) -> None:
    gw = gateway_factory(ssl_pki=pki)  # type: ignore[operator]
    result = storescu(
        gw.port, write_ct(tmp_path / "ct.dcm"), tls=(pki.ca, pki.pacs.cert, pki.pacs.key)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(gw.queued()) == 1


def test_a_resent_object_is_a_success_and_queued_once(
    gateway_factory: object, tmp_path: Path
) -> None:
    gw = gateway_factory()  # type: ignore[operator]
    source = write_ct(tmp_path / "ct.dcm")
    for _ in range(2):
        result = storescu(gw.port, source)
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(gw.queued()) == 1
    assert gw.receiver.stats() == {"stored": 1, "duplicate": 1}


def test_a_truncated_object_fails_and_is_kept_in_quarantine(
    gateway_factory: object, tmp_path: Path
) -> None:
    gw = gateway_factory()  # type: ignore[operator]
    source = write_ct(tmp_path / "ct.dcm")
    with source.open("r+b") as f:
        f.truncate(source.stat().st_size - 100)  # Pixel Data shorter than declared
    status = send_raw(gw.port, source)
    assert status.Status == 0xC000
    assert "(7FE0,0010)" in status.ErrorComment
    assert gw.queued() == []
    kept = gw.quarantine.list()
    assert len(kept) == 1
    assert kept[0].source == "dicom:MODALITY"
    assert "received by C-STORE" in kept[0].reason


def test_a_dataset_that_does_not_match_the_request_gets_a900(
    gateway_factory: object, tmp_path: Path
) -> None:
    gw = gateway_factory()  # type: ignore[operator]
    source = write_ct(tmp_path / "ct.dcm")
    ds = dcmread(source)
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"  # the request's UID comes from the file meta
    ds.save_as(source)
    assert dcmread(source).file_meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID
    status = send_raw(gw.port, source)
    assert status.Status == 0xA900
    assert gw.queued() == []
    assert len(gw.quarantine.list()) == 1


def test_a_full_queue_answers_out_of_resources_and_keeps_nothing(
    gateway_factory: object, tmp_path: Path
) -> None:
    gw = gateway_factory(max_bytes=1000)  # type: ignore[operator]
    status = send_raw(gw.port, write_ct(tmp_path / "ct.dcm"))
    assert status.Status == 0xA700
    assert gw.queued() == []
    assert gw.quarantine.list() == []
    assert wait_until(lambda: gw.staging_files() == [])


class BrokenSpool:
    """A spool whose enqueue fails: an internal error the listener must survive."""

    def __init__(self, real: Spool) -> None:
        self._real = real

    def room_for(self, incoming_bytes: int) -> Room:
        return Room(True)

    def report_storage_fault(self, exc: StorageNotReadyError) -> None:
        raise AssertionError(f"not a storage fault: {exc}")

    def staging_path(self, suffix: str = ".dcm") -> Path:
        return self._real.staging_path(suffix)

    def enqueue(self, obj: ConvertedObject, source: str) -> object:
        raise RuntimeError("disk controller on fire")


def test_an_internal_error_is_a_failure_status_and_the_listener_survives(
    gateway_factory: object, tmp_path: Path
) -> None:
    holder = tmp_path / "holder"
    real = Spool(holder, ["pacs"], 1 << 30, SystemClock())
    real.open()
    try:
        gw = gateway_factory(spool=BrokenSpool(real))  # type: ignore[operator]
        status = send_raw(gw.port, write_ct(tmp_path / "ct.dcm"))
        assert status.Status == 0xC000
        assert status.ErrorComment == "internal error"
        assert echoscu(gw.port).returncode == 0
        assert wait_until(lambda: list(real.staging_dir.iterdir()) == [])
    finally:
        real.close()


def test_prepare_can_replace_the_object_that_is_queued(
    gateway_factory: object, tmp_path: Path
) -> None:
    def hold(src: Path, dst: Path) -> ConvertedObject:
        shutil.copyfile(src, dst)
        ds = dcmread(dst, stop_before_pixels=True)
        return ConvertedObject(
            path=dst,
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            study_instance_uid=ds.StudyInstanceUID,
            source_sha256="0" * 64,
            kind="coerced",
            held_reason="no unique worklist match",
        )

    gw = gateway_factory(prepare=hold)  # type: ignore[operator]
    result = storescu(gw.port, write_ct(tmp_path / "ct.dcm"))
    assert result.returncode == 0, result.stdout + result.stderr
    info = gw.spool.show(gw.queued()[0])
    assert info is not None
    assert info.held_reason == "no unique worklist match"
    assert info.kind == "dicom-store"
    assert info.source_sha256 != "0" * 64  # the received bytes' hash, for duplicate detection
    [source] = info.sources
    assert (source.channel, source.calling_ae, source.peer_address) == (
        "dicom",
        "MODALITY",  # storescu's -aet
        "127.0.0.1",
    )
    assert source.sha256 == info.source_sha256 and source.size == info.size
    assert wait_until(lambda: gw.staging_files() == [])


def test_a_transfer_cut_off_midway_leaves_nothing_in_staging(
    gateway_factory: object, tmp_path: Path
) -> None:
    gw = gateway_factory()  # type: ignore[operator]
    ds = dcmread(write_ct(tmp_path / "ct.dcm", rows=512, cols=512))
    encoded = encode(ds, False, True)
    assert encoded is not None
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(encoded)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    assert context_id is not None
    for index, pdata in enumerate(message.encode_msg(context_id, 16000)):
        if index == 4:  # the command and a few data set fragments, then nothing more
            break
        assoc.dul.send_pdu(pdata)
    assert wait_until(lambda: any(p.name.startswith("rx-") for p in gw.staging_files()))
    assoc.abort()
    assert wait_until(lambda: gw.listener.stats()["active"] == 0)
    assert wait_until(lambda: gw.staging_files() == [])
    assert gw.queued() == []


def test_a_jpeg_object_passes_through_in_the_syntax_it_was_sent_in(
    gateway_factory: object, tmp_path: Path
) -> None:
    gw = gateway_factory()  # type: ignore[operator]
    source = write_jpeg_sc(tmp_path / "sc.dcm")
    # -xy: JPEG Baseline and the uncompressed syntaxes; we take the JPEG as it is.
    result = storescu(gw.port, source, extra=("-xy",))
    assert result.returncode == 0, result.stdout + result.stderr
    info = gw.spool.show(gw.queued()[0])
    assert info is not None and info.payload is not None
    assert info.transfer_syntax_uid == JPEGBaseline8Bit
    assert dcmread(info.payload).PixelData == dcmread(source).PixelData


# SOP classes pynetdicom knows but trims from StoragePresentationContexts (the listener refused
# them before issue 11 item 14). The data set is pydicom's CT_small with its SOP Class changed:
# the port does not validate the IOD, it keeps whatever a modality sends.
NEWER_STORAGE_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.13.1.4",  # Breast Projection X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map Storage
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR Storage
    "1.2.840.10008.5.1.4.1.1.88.73",  # Patient Radiation Dose SR Storage
)


def test_storage_classes_beyond_pynetdicoms_short_list_are_accepted(
    gateway_factory: object, tmp_path: Path
) -> None:
    from pydicom.data import get_testdata_file

    gw = gateway_factory()  # type: ignore[operator]
    ae = AE(ae_title="MODALITY")
    for sop_class in NEWER_STORAGE_CLASSES:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    sent: list[str] = []
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert accepted == set(NEWER_STORAGE_CLASSES)
        for n, sop_class in enumerate(NEWER_STORAGE_CLASSES, 1):
            ds = dcmread(str(get_testdata_file("CT_small.dcm")))
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.999.14.{n}"
            ds.file_meta.MediaStorageSOPClassUID = sop_class
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            status = assoc.send_c_store(ds)
            assert status.Status == 0x0000, (sop_class, status)
            sent.append(str(ds.SOPInstanceUID))
    finally:
        assoc.release()
    queued = [gw.spool.show(object_id) for object_id in gw.queued()]
    assert sorted((i.sop_class_uid, i.sop_instance_uid) for i in queued if i) == sorted(
        zip(NEWER_STORAGE_CLASSES, sent, strict=True)
    )
