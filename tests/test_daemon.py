"""Whole flows through the real daemon: drop folder -> DICOM -> queue -> TLS C-STORE to DCMTK."""

from __future__ import annotations

import io
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import Pki
from tests.forward.objects import corpus_file
from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, dciodvfy, free_port, storescp_syntax_config

pytestmark = pytest.mark.peers


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Write as a device would: the final name appears complete (rename of a hidden temp)."""
    tmp = folder / f".{name}.part"
    tmp.write_bytes(data)
    target = folder / name
    tmp.rename(target)
    return target


def png_bytes(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8), "L")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def dicom_bytes() -> tuple[bytes, str]:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Modality^Direct"
    ds.PatientID = "DIRECT1"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Rows, ds.Columns = 8, 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(64))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), str(ds.SOPInstanceUID)


def received_uids(pacs: StoreSCP) -> set[str]:
    uids = set()
    for path in pacs.received():
        try:
            uids.add(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        except Exception:  # storescp may still be writing this one
            continue
    return uids


def tls_pacs(tmp_path: Path, pki: Pki, factory: type[StoreSCP]) -> StoreSCP:
    return factory(tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key)).start()


def test_dropped_files_reach_the_tls_pacs_conformant_and_bad_ones_are_quarantined(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    pacs = tls_pacs(tmp_path, pki, storescp_factory)
    config = write_config(tmp_path, pacs.port, tls=(pki.ca, pki.gateway.cert, pki.gateway.key))
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    assert any(m.startswith("READY=1") for m in gw.messages)
    folder = tmp_path / "drop"
    direct, direct_uid = dicom_bytes()
    drop(folder, "P001_DOE^JANE_1.jpg", jpeg_bytes(1))
    drop(folder, "P001_DOE^JANE_2.png", png_bytes(2))
    drop(folder, "P002_MÜLLER^JÜRGEN_3.dcm", direct)
    drop(folder, "P003_ROE^RICHARD_empty.jpg", b"")
    drop(folder, "P003_ROE^RICHARD_noise.jpg", os.urandom(5000))
    drop(folder, "P003_ROE^RICHARD_bad.pdf", b"%PDF-1.4\nthis is not a pdf at all\n")

    assert wait_until(lambda: len(received_uids(pacs)) >= 3, 30), gw.log()
    assert wait_until(lambda: not any(folder.iterdir()), 10), list(folder.iterdir())
    uids = received_uids(pacs)
    assert direct_uid in uids and len(uids) == 3
    for path in pacs.received():
        if pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID == direct_uid:
            continue  # forwarded as it came; only objects the gateway creates are judged
        errors, _warnings = dciodvfy(path)
        assert errors == [], (path, errors)
    reasons = sorted((tmp_path / "state" / "quarantine").rglob("*.reason.json"))
    assert len(reasons) == 3, reasons
    assert gw.terminate() == 0


def test_kill_9_at_random_instants_while_files_flow_loses_nothing(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    pacs = tls_pacs(tmp_path, pki, storescp_factory)
    config = write_config(
        tmp_path, pacs.port, tls=(pki.ca, pki.gateway.cert, pki.gateway.key), settle=0.1
    )
    folder = tmp_path / "drop"
    rng = random.Random(20261124)
    total = 120
    for i in range(total):
        drop(folder, f"K{i % 7:03d}_KILL^TEST_{i:04d}.png", png_bytes(1000 + i))
    kills = 0
    while kills < 6:
        gw = GatewayProcess(config).start(wait_ready=False)
        gateways.append(gw)
        time.sleep(rng.uniform(0.3, 2.5))
        gw.kill()
        kills += 1
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    assert wait_until(lambda: len(received_uids(pacs)) >= total, 120), gw.log()[-3000:]
    assert len(received_uids(pacs)) == total
    assert not any(folder.iterdir())
    assert not list((tmp_path / "state").rglob("*.reason.json")), "nothing may be quarantined"
    assert gw.terminate() == 0


def test_pacs_down_then_up_delivers_everything_queued(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    port = free_port()
    config = write_config(tmp_path, port, tls=(pki.ca, pki.gateway.cert, pki.gateway.key))
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    for i in range(5):
        drop(tmp_path / "drop", f"D1_DOWN^TEST_{i}.png", png_bytes(i))
    assert wait_until(lambda: not any((tmp_path / "drop").iterdir()), 20)
    # Attempts against the closed port have failed before the PACS comes up.
    assert wait_until(lambda: "connection_refused" in gw.log(), 20), gw.log()[-3000:]
    pacs = storescp_factory(
        tmp_path / "pacs", port=port, tls=(pki.ca, pki.pacs.cert, pki.pacs.key)
    ).start()
    assert wait_until(lambda: len(received_uids(pacs)) == 5, 30), gw.log()[-3000:]
    assert "connection_refused" in gw.log()
    assert gw.terminate() == 0


def test_sigterm_stops_within_ten_seconds_and_keeps_unsent_objects(
    tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    config = write_config(tmp_path, free_port())  # nothing listens: objects stay queued
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    for i in range(3):
        drop(tmp_path / "drop", f"S1_STOP^TEST_{i}.png", png_bytes(i))
    assert wait_until(lambda: not any((tmp_path / "drop").iterdir()), 20)
    started = time.monotonic()
    assert gw.terminate(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert "STOPPING=1" in gw.messages
    payloads = list((tmp_path / "state" / "spool" / "objects").iterdir())
    assert len(payloads) == 3


def test_dual_personality_dicom_tiff_files_pass_through_to_a_little_endian_only_pacs(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    # Issue 10 A1: pydicom's own files whose preamble holds a TIFF header ("II*\0") were
    # quarantined as broken TIFFs. A4: the big-endian one must reach a PACS taking only
    # Explicit VR Little Endian. Each has its own SOP Instance UID (the MR_small variants share
    # one, so only one of them is dropped).
    names = ["CT_small.dcm", "examples_rgb_color.dcm", "MR_small_bigendian.dcm"]
    sources = [corpus_file(name) for name in names]
    assert all(
        p.read_bytes()[:4] == b"II*\x00" for p in [*sources, corpus_file("MR_truncated.dcm")]
    )
    classes = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID) for p in sources]
    le_only = storescp_syntax_config(tmp_path / "le.cfg", classes, [ExplicitVRLittleEndian])
    pacs = storescp_factory(tmp_path / "pacs", extra_args=le_only).start()
    gw = GatewayProcess(write_config(tmp_path, pacs.port)).start()
    gateways.append(gw)
    folder = tmp_path / "drop"
    for source in [*sources, corpus_file("MR_truncated.dcm")]:
        drop(folder, source.name, source.read_bytes())

    originals = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p) for p in sources}
    assert wait_until(lambda: received_uids(pacs) >= set(originals), 30), gw.log()[-3000:]
    for path in pacs.received():
        received = pydicom.dcmread(path)
        original = originals[str(received.SOPInstanceUID)]
        assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(received.pixel_array, original.pixel_array), path
    assert wait_until(lambda: not any(folder.iterdir()), 10), list(folder.iterdir())
    # Only the truncated file is quarantined, and for what it is: broken DICOM, not TIFF.
    reasons = [
        json.loads(p.read_text("utf-8"))["reason"]
        for p in (tmp_path / "state" / "quarantine").rglob("*.reason.json")
    ]
    assert len(reasons) == 1, reasons
    assert "(7FE0,0010) declares 8192 bytes, beyond the end of the file" in reasons[0]
    assert "TIFF" not in reasons[0]


SLOW_STORE_SECONDS = 15  # storescp sleeps this long per progress step of a C-STORE (3 for one PDU)
STOP_BOUND_SECONDS = 25  # the stop deadline (8 s) and the interrupt's grace, with room for load


def test_sigterm_during_a_slow_c_store_aborts_it_exits_and_delivers_after_restart(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    # Issue 10 B13: the process stayed alive until the PACS answered (pynetdicom's DUL thread).
    port = free_port()
    slow = storescp_factory(
        tmp_path / "slow", port=port, extra_args=["-v", "--sleep-during", str(SLOW_STORE_SECONDS)]
    ).start()
    config = write_config(tmp_path, port)
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    drop(tmp_path / "drop", "T1_TERM^TEST_1.png", png_bytes(1))
    assert wait_until(lambda: "Received Store Request" in slow.log(), 30), gw.log()[-3000:]

    started = time.monotonic()
    assert gw.terminate(timeout=STOP_BOUND_SECONDS) == 0  # raises TimeoutExpired if it hangs
    assert time.monotonic() - started < STOP_BOUND_SECONDS
    log = gw.log()
    assert "delivery_interrupted" in log and "service did not stop in time" not in log, log
    # storescp notices once it wakes: the association ended without a release.
    assert wait_until(lambda: "abort" in slow.log().lower(), 4 * SLOW_STORE_SECONDS), slow.log()
    assert "Association Release" not in slow.log()
    slow.stop()

    pacs = storescp_factory(tmp_path / "pacs", port=port).start()
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    assert wait_until(lambda: len(received_uids(pacs)) == 1, 30), gw.log()[-3000:]
    assert gw.terminate() == 0
