"""The dicom-gateway command as an operator uses it: demo, queue list/show/retry/purge."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout
    )


def test_demo_delivers_its_samples_and_the_queue_shows_them(tmp_path: Path) -> None:
    proc = run_cli("demo", "--duration", "25", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Four sample files, and with socat three vital-signs reports from the simulated device.
    expected = 4 + (3 if shutil.which("socat") else 0)
    assert proc.stdout.strip().splitlines()[-1] == f"demo: {expected} received, 0 failed"
    assert len(list((tmp_path / "pacs").iterdir())) == expected

    config = str(tmp_path / "gateway.toml")
    listed = run_cli("queue", "list", "--json", "--config", config)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(r["state"] for r in rows) == ["sent"] * expected
    shown = run_cli("queue", "show", str(rows[0]["object_id"]), "--config", config)
    assert json.loads(shown.stdout)["object_id"] == rows[0]["object_id"]
    assert run_cli("queue", "show", "999", "--config", config).returncode == 1
    retry = run_cli("queue", "retry", "--all-failed", "--config", config)
    assert retry.stdout.strip() == "0 deliveries set to retry now"
    assert run_cli("queue", "purge", "--config", config).returncode == 2  # names nothing
