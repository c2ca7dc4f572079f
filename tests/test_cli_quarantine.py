"""`dicom-gateway quarantine list|show|requeue` beside the running daemon, as an operator uses it.

A real daemon with a drop folder and its DICOM port, DCMTK storescp as the PACS and storescu as
the modality. Files are quarantined by the daemon itself (an unreadable image, a cut-off
C-STORE) or, for files that were refused by an earlier release and would pass now, placed in
its quarantine the way it places them; the CLI runs in a subprocess as it does on the box.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AUDIT_FILE
from gateway.clock import SystemClock
from gateway.ingest.quarantine import Quarantine
from gateway.spool.store import Spool
from tests.forward.objects import write_ct
from tests.harness import GatewayProcess, wait_until, write_config
from tests.ingest.test_receiver import send_raw
from tests.peers import StoreSCP, free_port
from tests.test_daemon import drop, png_bytes

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parent.parent


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`dicom-gateway ARGS --config CONFIG`; the completed process (exit code, output)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listed(config: Path) -> list[dict[str, Any]]:
    proc = cli(config, "quarantine", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


@pytest.fixture
def running(
    tmp_path: Path, storescp_factory: type[StoreSCP]
) -> Iterator[tuple[GatewayProcess, Path, StoreSCP, int]]:
    pacs = storescp_factory(tmp_path / "pacs").start()
    config = write_config(tmp_path, pacs.port)
    port = free_port()
    with config.open("a") as f:
        f.write(f'\n[dicom_listener]\nport = {port}\nbind = "127.0.0.1"\n')
    gw = GatewayProcess(config).start()
    try:
        yield gw, config, pacs, port
    finally:
        gw.stop()


def test_quarantined_files_are_listed_shown_and_put_back_through_ingest(
    tmp_path: Path, running: tuple[GatewayProcess, Path, StoreSCP, int]
) -> None:
    gw, config, pacs, port = running
    state = tmp_path / "state"
    # 1. The daemon quarantines an unreadable image dropped in its folder ...
    drop(tmp_path / "drop", "P1_Doe_broken.png", b"\x89PNG\r\n\x1a\n not really")
    assert wait_until(lambda: len(listed(config)) == 1, timeout=30)
    # ... and an object cut off in its C-STORE (the structural check refuses it).
    cut = write_ct(tmp_path / "ct-cut.dcm")
    cut.write_bytes(cut.read_bytes()[:-300])
    assert send_raw(port, cut).Status == 0xC000
    assert wait_until(lambda: len(listed(config)) == 2, timeout=30)
    # 2. Two files refused by an earlier release that would pass now, quarantined as it did.
    quarantine = Quarantine(state / "quarantine", SystemClock())
    (tmp_path / "staged").mkdir()
    good_png = drop(tmp_path / "staged", "P9_Roe_good.png", png_bytes(3))
    quarantine.put(good_png, "export", "an earlier release refused it")
    good_ct = write_ct(tmp_path / "ct-good.dcm")
    quarantine.put(good_ct, "dicom:MODALITY", "received by C-STORE: an earlier refusal")

    rows = listed(config)
    assert [r["channel"] for r in rows] == ["file", "dicom", "file", "dicom"]
    broken, cut_row, png_row, ct_row = rows
    assert broken["source"] == "export" and broken["requeueable"] is True
    assert cut_row["source"] == "dicom:MODALITY"
    assert cut_row["reason"].startswith("received by C-STORE: ")
    text = cli(config, "quarantine", "list")
    assert text.returncode == 0
    for row in rows:
        assert row["id"] in text.stdout
    shown = cli(config, "quarantine", "show", broken["id"])
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == broken

    # 3. Put back: the PNG was dropped outside the folder, so it goes to the folder's top.
    png_back = cli(config, "quarantine", "requeue", png_row["id"])
    assert png_back.returncode == 0, png_back.stderr
    assert "put back into drop folder 'export' as P9_Roe_good.png" in png_back.stdout
    ct_back = cli(config, "quarantine", "requeue", ct_row["id"])
    assert ct_back.returncode == 0, ct_back.stderr
    assert "queued as object" in ct_back.stdout
    assert wait_until(lambda: len(pacs.received()) == 2, timeout=30), gw.log()

    # 4. Refused again: back in quarantine with the new reason, under a new id; nothing lost.
    again = cli(config, "quarantine", "requeue", broken["id"], cut_row["id"])
    assert again.returncode == 0, again.stderr
    assert "quarantined again" in again.stdout  # the C-STORE object, at once

    def requarantined() -> bool:
        ids = {r["id"] for r in listed(config)}
        return len(ids) == 2 and not ids & {broken["id"], cut_row["id"]}

    assert wait_until(requarantined, timeout=30), gw.log()
    assert sorted(r["sha256"] for r in listed(config)) == sorted(
        (broken["sha256"], cut_row["sha256"])
    )

    # 5. Refusals and the audit trail.
    unknown = cli(config, "quarantine", "requeue", "20990101T000000Z-1")
    assert unknown.returncode == 1
    assert "refused: nothing in quarantine has the id" in unknown.stderr
    audit = [json.loads(line) for line in (state / AUDIT_FILE).read_text().splitlines()]
    requeues = [a for a in audit if a["action"] == "quarantine requeue"]
    assert [a["target"] for a in requeues] == [
        f"quarantine:{png_row['id']}",
        f"quarantine:{ct_row['id']}",
        f"quarantine:{broken['id']}",
        f"quarantine:{cut_row['id']}",
    ]
    assert {a["actor"] for a in requeues} == {f"cli:{getpass.getuser()}"}


def test_list_and_show_escape_control_characters_from_drop_folder_names(tmp_path: Path) -> None:
    # A device's file name with CR, LF and an ESC sequence went to the terminal raw: a forged
    # second row, or a terminal told to clear its screen.
    config = write_config(tmp_path, free_port())
    state = tmp_path / "state"
    spool = Spool(state, ["pacs"], 1 << 30, SystemClock())
    spool.open()
    spool.close()
    name = "P1_Doe_x\r\nFORGED ROW\x1b[2J.png"
    (tmp_path / "staged").mkdir()
    staged = drop(tmp_path / "staged", name, b"not an image")
    Quarantine(state / "quarantine", SystemClock()).put(
        staged, "export\x1b]0;title\x07", f"cannot read {name}"
    )

    text = cli(config, "quarantine", "list")
    assert text.returncode == 0, text.stderr
    assert "\x1b" not in text.stdout and "\r" not in text.stdout and "\x07" not in text.stdout
    rows = [line for line in text.stdout.splitlines() if "FORGED ROW" in line]
    assert len(rows) == 1 and rows[0].startswith("20"), text.stdout  # still one row
    assert "x\\u000d\\u000aFORGED ROW\\u001b[2J.png" in rows[0]
    assert "export\\u001b]0;title\\u0007" in rows[0]

    listing = cli(config, "quarantine", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    assert "\x1b" not in listing.stdout and "\r" not in listing.stdout
    (row,) = json.loads(listing.stdout)
    assert row["reason"] == f"cannot read {name}"  # escaped, not altered
    shown = cli(config, "quarantine", "show", row["id"])
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert json.loads(shown.stdout) == row
