"""Issue 11 item 7: nothing the gateway writes is world-readable, whatever umask started it.

The real daemon is started as a shell outside systemd would start it, with umask 022. Files are
dropped (with umask 022, as a device's share writes them): a PNG and a DICOM file are delivered
to DCMTK's storescp, one is quarantined, two are held and one of them
discarded with `dicom-gateway held discard` (also started with umask 022). Then every folder
and file under the state folder (the folder itself, the queue and its objects, quarantined and
discarded objects, worklist.sqlite, the audit log) must have no permission bit for others.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, free_port
from tests.test_daemon import dicom_bytes, drop, png_bytes, received_uids
from tests.test_daemon_hostile import drop_folder_empty
from tests.test_daemon_sources import LONG_NAME

pytestmark = pytest.mark.peers

SHELL_UMASK = 0o022


def gateway_cli(config: Path, *args: str) -> str:
    """`dicom-gateway ARGS --config CONFIG` from a shell with umask 022; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        umask=SHELL_UMASK,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def readable_by_others(root: Path) -> list[str]:
    """Every path at or under ``root`` (not following links) with a permission bit for others."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & stat.S_IRWXO:
            found.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(root.parent)}")
    return found


def test_state_written_by_a_daemon_started_with_umask_022_is_not_world_readable(
    tmp_path: Path, storescp_factory: type[StoreSCP], gateways: list[GatewayProcess]
) -> None:
    pacs = storescp_factory(tmp_path / "pacs").start()
    config = write_config(tmp_path, pacs.port)
    # A RIS that does not answer: the worklist cache (worklist.sqlite) is made all the same.
    config.write_text(
        config.read_text()
        + f"""
[worklist]
ae_title = "RIS"
host = "127.0.0.1"
port = {free_port()}
refresh_seconds = 60
live_query_timeout = 1
connect_timeout = 1
require_match = false
"""
    )
    gw = GatewayProcess(config, umask=SHELL_UMASK).start()
    gateways.append(gw)
    folder = tmp_path / "drop"
    drop(folder, "P001_DOE^JANE_1.png", png_bytes(1))
    drop(folder, "P001_DOE^JANE_2.dcm", dicom_bytes()[0])  # passed through as it came
    drop(folder, "P002_ROE^RICHARD_bad.png", b"not a png at all")
    drop(folder, f"P003_{LONG_NAME}_held.png", png_bytes(3))  # stays held, in the queue
    drop(folder, f"P004_{LONG_NAME}_held.png", png_bytes(4))  # held, then discarded
    assert wait_until(lambda: drop_folder_empty(folder), 30), gw.log()
    assert wait_until(lambda: len(received_uids(pacs)) == 2, 30), gw.log()
    held = json.loads(gateway_cli(config, "held", "list", "--json"))
    assert len(held) == 2, held
    gateway_cli(config, "held", "discard", str(held[-1]["object_id"]), "--reason", "test")

    state = tmp_path / "state"
    made = {p.relative_to(state).parts[0] for p in state.rglob("*")}
    assert {"spool", "quarantine", "worklist.sqlite", "audit.jsonl"} <= made, sorted(made)
    assert list((state / "quarantine").rglob("*.reason.json")), "nothing was quarantined"
    assert list(state.rglob("discarded/*")), "nothing was discarded"
    assert list(state.rglob("objects/*")), "no object is in the queue"
    assert readable_by_others(state) == []
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert gw.terminate() == 0


@pytest.mark.parametrize(
    ("verb", "umask_after"),
    [
        (["queue", "list"], 0o027),  # opens the queue: state (here it refuses: none yet)
        (["held", "list"], 0o027),
        (["procedure", "show"], 0o027),
        (["quarantine", "list"], 0o027),  # a requeue puts files back and queues objects
        (["check-config"], SHELL_UMASK),  # only reads: the caller's umask is left alone
    ],
)
def test_the_verbs_that_write_state_set_umask_0027_in_the_entry_point(
    tmp_path: Path, verb: list[str], umask_after: int
) -> None:
    from gateway.cli import main

    config = write_config(tmp_path, free_port())
    os.umask(SHELL_UMASK)  # tests/conftest.py puts the test run's umask back afterwards
    main([*verb, "--config", str(config)])  # whether it succeeds is not the point here
    assert os.umask(SHELL_UMASK) == umask_after
