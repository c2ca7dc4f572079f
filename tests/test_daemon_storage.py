"""The real daemon on a real, small state file system that fills up or turns read-only.

The state_dir is a tmpfs of a few MiB or a loop-mounted ext4 (tests/realfs.py: root needed,
skipped otherwise, failed under REQUIRE_PEERS=1); the PACS is DCMTK's storescp, the modality
DCMTK's storescu, the files pydicom's own CT_small.dcm (a fresh SOP Instance UID each) and PNGs.
What must hold, whatever the disk does: the daemon stays up, delivery goes on as far as the
queue can record it (and frees the space), ingest pauses with the file left in the drop folder
(a C-STORE answered 0xA700), nothing is quarantined, each state change is one log line, STATUS=
says why, and it all resumes by itself when the fault clears.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests import realfs
from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, free_port, require_tool
from tests.test_daemon import drop, png_bytes, received_uids

pytestmark = pytest.mark.peers

MIB = 1024 * 1024


def ct_bytes() -> tuple[bytes, str]:
    """pydicom's CT_small.dcm (39 KB, a TIFF header in its preamble) as a new instance."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), str(uid)


def config_for(root: Path, port: int, **gateway: int) -> Path:
    extra = "\n".join(f"{key} = {value}" for key, value in gateway.items())
    return write_config(root, port, gateway_extra=extra)


def with_listener(config: Path, port: int) -> None:
    config.write_text(
        config.read_text("utf-8") + f'\n[dicom_listener]\nport = {port}\nbind = "127.0.0.1"\n',
        "utf-8",
    )


def storescu(port: int, path: Path) -> subprocess.CompletedProcess[str]:
    args = [require_tool("storescu"), "-v", "-aet", "MODALITY", "-aec", "EDGE_GW", "-to", "5"]
    args += ["127.0.0.1", str(port), str(path)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def events(log: str, name: str) -> int:
    """How many log lines are the event ``name`` (the daemon logs JSON lines)."""
    return log.count(f'"event": "{name}"')


def drop_cts(folder: Path, stem: str, count: int) -> list[tuple[bytes, str]]:
    """``count`` fresh CT objects dropped as <stem>0.dcm...: their bytes and SOP Instance UIDs."""
    objects = [ct_bytes() for _ in range(count)]
    for i, (data, _) in enumerate(objects):
        drop(folder, f"{stem}{i}.dcm", data)
    return objects


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_no_fault_noise(gw: GatewayProcess, state: Path) -> str:
    log = gw.log()
    assert "Traceback" not in log, log[-4000:]
    assert "service thread died" not in log
    assert "converter failed" not in log and "quarantine failed" not in log
    assert not list(state.rglob("*.reason.json")), "a good file was quarantined"
    assert gw.proc is not None and gw.proc.poll() is None, "the daemon must stay up"
    return log


def assert_paused_and_resumed_once(gw: GatewayProcess, state: Path) -> str:
    """No fault noise, and ingest paused for the state storage once and resumed once."""
    log = assert_no_fault_noise(gw, state)
    assert events(log, "state storage: ingest paused") == 1
    assert events(log, "queue has room: ingest resumed") == 1
    return log


def test_full_state_disk_keeps_delivering_pauses_ingest_and_resumes(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    state = tmp_path / "state"
    with realfs.tmpfs(state, 6 * MIB):
        port, listener = free_port(), free_port()
        # max_queue_bytes far above the real free space, as when other data shares the disk.
        config = config_for(
            tmp_path, port, max_queue_bytes=1 << 30, min_free_bytes=MIB, reserve_bytes=MIB
        )
        with_listener(config, listener)
        gw = GatewayProcess(config).start()
        gateways.append(gw)
        folder = tmp_path / "drop"
        first = drop_cts(folder, "first", 6)
        assert wait_until(lambda: not any(folder.iterdir()), 20), gw.log()[-3000:]
        assert (state / "spool" / "reserve").stat().st_size == MIB

        filler = realfs.fill(state / "filler")  # something else takes every byte left
        drop_cts(folder, "later", 3)
        assert wait_until(lambda: "state storage: ingest paused" in gw.log(), 15), gw.log()
        modality_file = tmp_path / "modality.dcm"
        modality_file.write_bytes(ct_bytes()[0])
        refused = storescu(listener, modality_file)
        # DCMTK names status 0xA700 "Refused: OutOfResources"; the modality keeps the object.
        said = refused.stdout + refused.stderr
        assert "Refused: OutOfResources" in said, said

        # The PACS comes up on the full disk: everything queued is delivered, freeing space.
        pacs = storescp_factory(tmp_path / "pacs", port=port).start()
        assert wait_until(lambda: len(received_uids(pacs)) == 6, 30), gw.log()[-3000:]
        assert received_uids(pacs) == {uid for _, uid in first}
        line = gw.wait_for_status("ingest paused", 15)
        assert "state disk low" in line
        assert names(folder) == ["later0.dcm", "later1.dcm", "later2.dcm"]  # kept, waiting

        filler.unlink()  # the space comes back: ingest resumes by itself
        assert wait_until(lambda: len(received_uids(pacs)) == 9, 30), gw.log()[-3000:]
        assert not any(folder.iterdir())
        assert wait_until(lambda: (state / "spool" / "reserve").exists(), 10)
        log = assert_paused_and_resumed_once(gw, state)
        assert events(log, "state disk full: delivery reserve released") == 1
        assert events(log, "delivery reserve in place") == 2  # at start, and made again
        assert gw.terminate() == 0


def test_a_full_disk_never_quarantines_a_good_file_and_logs_once(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    state = tmp_path / "state"
    with realfs.tmpfs(state, 4 * MIB):
        port = free_port()
        # No headroom and no reserve: the conversion itself meets the full disk (staging, the
        # grouping database's commit), as on a box whose limits are set too generously.
        config = config_for(tmp_path, port, min_free_bytes=0, reserve_bytes=0)
        gw = GatewayProcess(config).start()
        gateways.append(gw)
        filler = realfs.fill(state / "filler", leave=12 * 1024)
        folder = tmp_path / "drop"
        for i in range(3):
            drop(folder, f"P{i}_FULL^DISK_{i}.png", png_bytes(i, (16, 16)))
        assert wait_until(lambda: "state storage: ingest paused" in gw.log(), 15), gw.log()
        # Many rescans later (one every 0.5 s; STATUS= comes every 10 s): still there, one line.
        gw.wait_for_status("state storage", 15)
        assert len(names(folder)) == 3
        log = assert_no_fault_noise(gw, state)
        assert events(log, "state storage: ingest paused") == 1

        filler.unlink()
        pacs = storescp_factory(tmp_path / "pacs", port=port).start()
        assert wait_until(lambda: len(received_uids(pacs)) == 3, 30), gw.log()[-3000:]
        log = assert_paused_and_resumed_once(gw, state)
        assert gw.terminate() == 0


def test_start_with_48_kb_free_reports_and_resumes_when_space_returns(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    state = tmp_path / "state"
    with realfs.tmpfs(state, 2 * MIB):
        port = free_port()
        config = config_for(tmp_path, port, min_free_bytes=256 * 1024, reserve_bytes=0)
        GatewayProcess(config).start().terminate()  # the queue exists, as on a box in service
        filler = realfs.fill(state / "filler", leave=48 * 1024)
        assert realfs.free_bytes(state) <= 48 * 1024
        gw = GatewayProcess(config).start()  # READY=1 even so
        gateways.append(gw)
        gw.wait_for_status("ingest paused", 15)
        drop(tmp_path / "drop", "late.dcm", ct_bytes()[0])
        pacs = storescp_factory(tmp_path / "pacs", port=port).start()
        filler.unlink()
        assert wait_until(lambda: len(received_uids(pacs)) == 1, 30), gw.log()[-3000:]
        assert_no_fault_noise(gw, state)
        assert gw.terminate() == 0


def test_read_only_state_disk_keeps_the_daemon_up_and_resumes_after_remount_rw(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    state = tmp_path / "state"
    with realfs.ext4(state, 16 * MIB):
        port = free_port()
        config = config_for(tmp_path, port, min_free_bytes=MIB, reserve_bytes=MIB)
        pacs = storescp_factory(tmp_path / "pacs", port=port).start()
        gw = GatewayProcess(config).start()
        folder = tmp_path / "drop"
        drop(folder, "before.dcm", ct_bytes()[0])
        assert wait_until(lambda: len(received_uids(pacs)) == 1, 20), gw.log()[-3000:]
        assert gw.terminate() == 0

        realfs.remount(state, "ro")  # as errors=remount-ro leaves it, with the box rebooted
        gw = GatewayProcess(config).start()
        gateways.append(gw)
        assert "read-only" in gw.wait_for_status("state storage", 15)
        drop(folder, "during.dcm", ct_bytes()[0])
        assert wait_until(lambda: "state storage: ingest paused" in gw.log(), 15), gw.log()
        assert names(folder) == ["during.dcm"]

        realfs.remount(state, "rw")  # the engineer fixed it: no restart needed
        assert wait_until(lambda: len(received_uids(pacs)) == 2, 30), gw.log()[-3000:]
        assert not any(folder.iterdir())
        log = assert_paused_and_resumed_once(gw, state)
        assert events(log, "state storage failed") == 1
        assert events(log, "state storage recovered") == 1
        assert events(log, "delivery paused: state storage failed") == 1
        assert events(log, "delivery resumed: state storage recovered") == 1
        assert gw.terminate() == 0


def test_an_ext4_error_that_remounts_read_only_mid_run_is_ridden_out(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    state = tmp_path / "state"
    with realfs.ext4(state, 16 * MIB):
        port = free_port()
        config = config_for(tmp_path, port, min_free_bytes=MIB, reserve_bytes=MIB)
        gw = GatewayProcess(config).start()  # no PACS yet: the lane keeps retrying
        gateways.append(gw)
        folder = tmp_path / "drop"
        queued = drop_cts(folder, "queued", 3)
        assert wait_until(lambda: not any(folder.iterdir()), 20), gw.log()[-3000:]
        realfs.trigger_error(state)  # what the kernel does on a metadata error: errors=remount-ro
        drop(folder, "during.dcm", ct_bytes()[0])
        assert wait_until(lambda: "state storage: ingest paused" in gw.log(), 20), gw.log()
        # SQLite sees the aborted journal as "disk I/O error", and statvfs does not flag an
        # emergency read-only mount: the fault is reported as an I/O error of the storage.
        line = gw.wait_for_status("state storage", 15)
        assert "I/O error" in line or "read-only" in line, line
        # The card still reads: the backlog queued before the fault reaches the PACS, the
        # claims and marks kept in memory (a restart would send them once more).
        pacs = storescp_factory(tmp_path / "pacs", port=port).start()
        want = {uid for _, uid in queued}
        assert wait_until(lambda: received_uids(pacs) == want, 30), gw.log()[-3000:]
        assert "state storage" in gw.wait_for_status("state storage", 15)  # still said
        assert names(folder) == ["during.dcm"]
        log = assert_no_fault_noise(gw, state)
        assert events(log, "state storage: ingest paused") == 1
        assert events(log, "state storage failed: delivering with claims kept in memory") == 1
        assert events(log, "delivery paused: state storage failed") == 0
        assert events(log, "restarting service") == 0
