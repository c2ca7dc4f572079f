"""The rendered files read by the real systemd-networkd and systemd-timesyncd (Debian 12's),
each run in private mount and network namespaces (unshare) on a veth pair; no PID 1 systemd."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.appliance.network import parse_network, render, write_rendered

NETWORKD = Path("/lib/systemd/systemd-networkd")
TIMESYNCD = Path("/lib/systemd/systemd-timesyncd")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not NETWORKD.exists(),
    reason="needs root, unshare and systemd-networkd",
)

STATIC = """hostname = "ct-gw"
[interface]
name = ["veth-t0"]
mode = "static"
address = "192.0.2.10/24"
gateway = "192.0.2.1"
dns = ["192.0.2.53"]
domains = ["radiology.example.org"]
[time]
ntp = ["192.0.2.123"]
"""

SCRIPT = """set -e
mount -t tmpfs tmpfs /run/systemd
mount -t sysfs -o ro sysfs /sys
cp -r {src}/run/systemd/. /run/systemd/
ip link add veth-t0 type veth peer name veth-t1
ip link set lo up
ip link set veth-t1 up
SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=debug {daemon} > {log} 2>&1 &
pid=$!
i=0
until {until} || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done
ip -4 -o addr show veth-t0; ip -4 route
kill $pid; wait $pid || true
"""


def run_in_namespace(tmp_path: Path, daemon: Path, until: str) -> tuple[str, str]:
    log = tmp_path / "daemon.log"
    script = SCRIPT.format(src=tmp_path / "root", daemon=daemon, log=log, until=until)
    done = subprocess.run(
        ["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr, log.read_text()


def test_networkd_parses_and_applies_a_static_address(tmp_path: Path) -> None:
    write_rendered(tmp_path / "root", render(parse_network(STATIC)))
    out, log = run_in_namespace(tmp_path, NETWORKD, "ip -4 route | grep -q 'default via 192.0.2.1'")
    assert "Unknown key" not in log and "Failed to parse" not in log, log
    assert "Configuring with /run/systemd/network/10-dicom-gateway.network" in log, log
    assert "192.0.2.10/24" in out and "default via 192.0.2.1 dev veth-t0" in out, out + log


@pytest.mark.skipif(not TIMESYNCD.exists(), reason="needs systemd-timesyncd")
@pytest.mark.parametrize("ntp", ['["192.0.2.123"]', "[]"])
def test_timesyncd_never_falls_back_to_the_internet_pool(tmp_path: Path, ntp: str) -> None:
    write_rendered(tmp_path / "root", render(parse_network(f"[time]\nntp = {ntp}\n")))
    _, log = run_in_namespace(
        tmp_path, TIMESYNCD, "grep -q 'fallback server' " + str(tmp_path / "daemon.log")
    )
    assert "Unknown key" not in log, log
    assert "Added new fallback server" in log, log
    assert "pool.ntp.org" not in log, log
