"""A large object is streamed from its file: memory does not grow with the object's size.

Without the send window in gateway.forward.link, pynetdicom queues the file's PDUs faster than
TLS sends them and this child's peak grows by about 34 MiB for a 56 MiB object; with it, ~2 MiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Pki
from tests.forward.objects import write_ct
from tests.peers import StoreSCP

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]


def test_sixty_megabyte_object_over_tls_keeps_peak_rss_well_below_its_size(
    tmp_path: Path, pki: Pki, storescp_factory: type[StoreSCP]
) -> None:
    peer = storescp_factory(
        tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key), extra_args=["--ignore"]
    ).start()
    warmup = write_ct(tmp_path / "small.dcm")
    big = write_ct(tmp_path / "big.dcm", rows=2048, cols=2048, frames=7)
    size = big.stat().st_size
    assert size > 55 * 1024 * 1024

    args = [str(peer.port), str(warmup), str(big), str(pki.ca), str(pki.gateway.cert)]
    args.append(str(pki.gateway.key))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.forward.memchild", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["warmup"] == "delivered"
    assert report["big"] == "delivered", report["reason"]
    growth = (report["after_kib"] - report["before_kib"]) * 1024
    assert growth < 0.5 * size, f"peak RSS grew by {growth / 2**20:.1f} MiB"
    assert growth < 16 * 1024 * 1024  # in practice a few PDUs: the send window
