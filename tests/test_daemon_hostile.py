"""The real daemon against a PACS that refuses and against hostile drops.

Each test runs `dicom-gateway run` in a subprocess and checks what an operator would see: the
queue through the `dicom-gateway queue` commands, the quarantine folder, what the PACS received.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import (
    EncapsulatedPDFStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pypdf import PdfWriter

from tests.conftest import Pki
from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, free_port
from tests.test_daemon import dicom_bytes, drop, png_bytes, received_uids

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[1]
SECONDARY_CAPTURE = (
    SecondaryCaptureImageStorage,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
)
# 0xA700 (out of resources) used to be the refusal here; it is now a condition of the whole
# PACS that is retried (issue 10 B12, tests/test_daemon_pacs_conditions.py): "cannot understand"
# is an object's own permanent refusal.
CANNOT_UNDERSTAND = 0xC000
RSS_BOUND_KIB = 300 * 1024  # a safety bound for a 1 GB box, far above the daemon's normal peak


class RefusingPacs:
    """A pynetdicom storage SCP for Secondary Capture only that refuses chosen instances."""

    def __init__(self, refuse: dict[str, int]) -> None:
        self.port = free_port()
        self.refuse = refuse
        self.stored: list[str] = []
        self.offered: list[str] = []
        self._lock = threading.Lock()
        self._ae = AE(ae_title="PACS")
        for sop_class in SECONDARY_CAPTURE:  # Encapsulated PDF Storage deliberately absent
            self._ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.offered.append(uid)
            status = self.refuse.get(uid, 0x0000)
            if status == 0x0000:
                self.stored.append(uid)
        return status

    def start(self) -> RefusingPacs:
        self._server = self._ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@pytest.fixture
def refusing_pacs() -> Iterator[list[RefusingPacs]]:
    started: list[RefusingPacs] = []
    yield started
    for pacs in started:
        pacs.stop()


def gateway_cli(config: Path, *args: str) -> str:
    """Run `dicom-gateway ARGS --config CONFIG` as an operator would; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def pdf_bytes() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def drop_folder_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


def test_refused_objects_fail_with_their_reason_and_the_objects_after_them_are_delivered(
    tmp_path: Path, gateways: list[GatewayProcess], refusing_pacs: list[RefusingPacs]
) -> None:
    refused_dicom, refused_uid = dicom_bytes()
    pacs = RefusingPacs({refused_uid: CANNOT_UNDERSTAND}).start()
    refusing_pacs.append(pacs)
    config = write_config(tmp_path, pacs.port)
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    folder = tmp_path / "drop"

    drop(folder, "R001_REFUSED^PDF_report.pdf", pdf_bytes())
    drop(folder, "R002_REFUSED^STATUS_1.dcm", refused_dicom)
    assert wait_until(lambda: drop_folder_empty(folder), 20), gw.log()[-3000:]
    for i in range(3):
        drop(folder, f"R003_AFTER^REFUSAL_{i}.png", png_bytes(300 + i))

    assert wait_until(lambda: len(pacs.stored) == 3, 30), gw.log()[-3000:]
    failed: list[dict[str, Any]] = []

    def two_failed() -> bool:
        failed[:] = json.loads(gateway_cli(config, "queue", "list", "--state", "failed", "--json"))
        return len(failed) == 2

    assert wait_until(two_failed, 15), failed
    by_class = {row["failure_class"]: row for row in failed}
    assert set(by_class) == {"no_presentation_context", "dimse_failure"}, failed

    pdf_row = by_class["no_presentation_context"]
    assert "Encapsulated PDF Storage" in pdf_row["last_error"]
    shown = json.loads(gateway_cli(config, "queue", "show", str(pdf_row["object_id"])))
    assert shown["sop_class_uid"] == EncapsulatedPDFStorage
    assert shown["payload"] is not None and Path(shown["payload"]).exists()  # kept for retry

    status_row = by_class["dimse_failure"]
    assert status_row["sop_instance_uid"] == refused_uid
    assert status_row["status"] == CANNOT_UNDERSTAND
    assert "0xC000" in status_row["last_error"]
    assert pacs.offered.count(refused_uid) == 1  # refused for good: never offered again

    table = gateway_cli(config, "queue", "list", "--state", "failed")
    assert table.count(" failed ") == 2 and "0xC000" in table
    assert len(set(pacs.stored)) == 3 and refused_uid not in pacs.stored
    assert gw.terminate() == 0


def huge_pixel_length_dicom() -> bytes:
    """A small Part 10 file whose Pixel Data declares 0xFFFFFFF0 bytes (about 4 GiB)."""
    raw, _uid = dicom_bytes()
    header = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00"
    if header not in raw:
        header = struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00"
    at = raw.index(header) + len(header)
    return raw[:at] + struct.pack("<I", 0xFFFFFFF0) + raw[at + 4 :]


def test_huge_declared_length_is_quarantined_in_bounded_memory_and_the_daemon_goes_on(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    pacs = storescp_factory(tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key)).start()
    config = write_config(tmp_path, pacs.port, tls=(pki.ca, pki.gateway.cert, pki.gateway.key))
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    folder = tmp_path / "drop"

    hostile = huge_pixel_length_dicom()
    drop(folder, "H001_HUGE^LENGTH_1.dcm", hostile)
    assert wait_until(lambda: drop_folder_empty(folder), 20), gw.log()[-3000:]
    good, good_uid = dicom_bytes()
    drop(folder, "H002_GOOD^AFTER_2.dcm", good)

    assert wait_until(lambda: good_uid in received_uids(pacs), 30), gw.log()[-3000:]
    assert gw.proc is not None and gw.proc.poll() is None
    reasons = sorted((tmp_path / "state" / "quarantine").glob("*.reason.json"))
    assert len(reasons) == 1
    record = json.loads(reasons[0].read_text())
    assert "(7FE0,0010) declares 4294967280 bytes" in record["reason"], record
    quarantined = [
        p for p in reasons[0].parent.iterdir() if p.name.endswith("H001_HUGE^LENGTH_1.dcm")
    ]
    assert len(quarantined) == 1 and quarantined[0].read_bytes() == hostile
    assert len(received_uids(pacs)) == 1
    assert peak_rss_kib(gw.proc.pid) < RSS_BOUND_KIB
    assert gw.terminate() == 0


def test_symlink_to_a_file_outside_the_drop_folder_is_left_alone(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    pacs = storescp_factory(tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key)).start()
    config = write_config(tmp_path, pacs.port, tls=(pki.ca, pki.gateway.cert, pki.gateway.key))
    outside = tmp_path / "elsewhere" / "L001_OUTSIDE^TARGET_1.png"
    outside.parent.mkdir()
    secret = png_bytes(4242)
    outside.write_bytes(secret)
    before = outside.stat()
    folder = tmp_path / "drop"
    link = folder / "L001_OUTSIDE^TARGET_1.png"
    # One link is there when the daemon starts (the start-up scan), one appears while it runs.
    link.symlink_to(outside)
    gw = GatewayProcess(config).start()
    gateways.append(gw)
    late_link = folder / "L002_OUTSIDE^TARGET_2.png"
    late_link.symlink_to(outside)
    good_uids = set()
    for i in range(2):
        data, uid = dicom_bytes()
        drop(folder, f"L003_GOOD^BESIDE_{i}.dcm", data)
        good_uids.add(uid)

    assert wait_until(lambda: received_uids(pacs) >= good_uids, 30), gw.log()[-3000:]
    assert wait_until(lambda: len(list(folder.iterdir())) == 2, 10), list(folder.iterdir())
    assert link.is_symlink() and late_link.is_symlink()
    assert outside.read_bytes() == secret
    after = outside.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns, after.st_nlink) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
        before.st_nlink,
    )
    assert received_uids(pacs) == good_uids
    assert not list((tmp_path / "state").rglob("*.reason.json")), "nothing to quarantine"
    queued = json.loads(gateway_cli(config, "queue", "list", "--json"))
    assert {row["sop_instance_uid"] for row in queued} == good_uids
    assert os.path.realpath(link) == str(outside)
    assert gw.terminate() == 0
