"""The units in systemd/ as systemd itself reads them, without systemd as PID 1.

`systemd-analyze verify` and `security --offline=true` run against a temporary root (--root):
the host's own unit directory copied in (for sysinit.target and friends), our units under
/etc/systemd/system, and a fake /opt/dicom-gateway/current/bin/dicom-gateway, because verify
refuses an ExecStart= binary that does not exist. sysusers.d and tmpfiles.d run for real into
that root.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.peers import require_tool
from tests.systemd_sandbox import service_settings

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNITS = (
    "dicom-gateway.service",
    "dicom-gateway-update.service",
    "dicom-gateway-update.timer",
    "dicom-gateway-healthcheck.service",
)
DROP_IN = "dicom-gateway.service.d"
OK_EXPOSURE = 2.5  # systemd-analyze's "OK" band ends here


def make_root(tmp_path: Path, *, drop_in: bool = False) -> Path:
    """A filesystem root holding the host's units, ours and a fake gateway executable."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(SYSTEMD / name, units / name)
    if drop_in:
        shutil.copytree(SYSTEMD / DROP_IN, units / DROP_IN)
    binary = root / "opt/dicom-gateway/current/bin/dicom-gateway"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("systemd-analyze")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return analyze(
        "verify",
        f"--root={root}",
        "--man=no",
        "--generators=no",
        str(root / "etc/systemd/system" / unit),
    )


def exposure(root: Path, unit: str) -> float:
    """The overall exposure `systemd-analyze security --offline=true` gives ``unit``."""
    done = analyze("security", "--offline=true", f"--root={root}", "--no-pager", unit)
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_finds_nothing_to_complain_about(tmp_path: Path, unit: str) -> None:
    done = verify(make_root(tmp_path, drop_in=True), unit)
    # verify exits 0 on unknown keys and bad values, and only warns: any output is a finding.
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and done.stdout.strip() == "", done.stdout + done.stderr


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    unit = root / "etc/systemd/system/dicom-gateway.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=30s", "WatchdogSec=30s\nWatchDogSec=1"))
    (root / "opt/dicom-gateway/current/bin/dicom-gateway").unlink()
    done = verify(root, "dicom-gateway.service")
    assert "Unknown key 'WatchDogSec'" in done.stderr
    assert done.returncode != 0 and "is not executable" in done.stderr


def test_gateway_unit_scores_ok_in_the_offline_security_review(tmp_path: Path) -> None:
    assert exposure(make_root(tmp_path), "dicom-gateway.service") <= OK_EXPOSURE


def test_port_104_drop_in_stays_ok_and_adds_only_net_bind_service(tmp_path: Path) -> None:
    plain = exposure(make_root(tmp_path / "a"), "dicom-gateway.service")
    root = make_root(tmp_path / "b", drop_in=True)
    assert exposure(root, "dicom-gateway.service") <= OK_EXPOSURE
    done = analyze(
        "security", "--offline=true", f"--root={root}", "--no-pager", "dicom-gateway.service"
    )
    flagged = {
        line.split()[1]
        for line in done.stdout.splitlines()
        if line.startswith("✗") and "CapabilityBoundingSet" in line
    }
    assert flagged == {"CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)"}
    settings = service_settings(SYSTEMD / DROP_IN / "privileged-port.conf")
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert plain <= exposure(root, "dicom-gateway.service")


def test_gateway_unit_has_the_settings_the_daemon_relies_on() -> None:
    s = service_settings(SYSTEMD / "dicom-gateway.service")
    one = {key: values[-1] for key, values in s.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] == "30s"
    assert one["Restart"] == "on-failure"
    assert one["ExecStart"] == (
        "/opt/dicom-gateway/current/bin/dicom-gateway run --config /etc/dicom-gateway/gateway.toml"
    )
    assert one["User"] == one["Group"] == "dicom-gateway"
    assert one["SupplementaryGroups"] == "dialout"
    assert one["StateDirectory"] == one["ConfigurationDirectory"] == "dicom-gateway"
    assert one["UMask"] == "0027"
    assert one["ProtectSystem"] == "strict"
    assert one["DevicePolicy"] == "closed"
    assert set(s["DeviceAllow"]) == {
        "/dev/legacy-modality rw",
        "char-ttyUSB rw",
        "char-ttyACM rw",
    }
    assert "PrivateDevices" not in s  # it would hide the serial devices
    assert one["CapabilityBoundingSet"] == ""
    assert one["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert s["SystemCallFilter"][0] == "@system-service"
    assert one["MemoryDenyWriteExecute"] == "yes"
    for key in ("MemoryMax", "TimeoutStopSec", "KillMode", "LoadCredential"):
        assert key in s, key
    unit_text = (SYSTEMD / "dicom-gateway.service").read_text()
    assert re.search(r"^StartLimitIntervalSec=\S+", unit_text, re.M)
    assert re.search(r"^StartLimitBurst=\d+", unit_text, re.M)
    assert "Wants=dicom-gateway-healthcheck.service" in unit_text


def test_update_timer_is_randomised_and_persistent() -> None:
    text = (SYSTEMD / "dicom-gateway-update.timer").read_text()
    assert re.search(r"^RandomizedDelaySec=\S+", text, re.M)
    assert re.search(r"^Persistent=true$", text, re.M)
    assert re.search(r"^OnCalendar=\S+", text, re.M)
    update = service_settings(SYSTEMD / "dicom-gateway-update.service")
    assert update["ExecStart"][-1].startswith(
        "/opt/dicom-gateway/current/bin/dicom-gateway update apply --from-timer"
    )
    check = service_settings(SYSTEMD / "dicom-gateway-healthcheck.service")
    assert " update trial-check" in check["ExecStart"][-1]


def test_sysusers_and_tmpfiles_make_the_user_and_the_directories(tmp_path: Path) -> None:
    sysusers = require_tool("systemd-sysusers")
    tmpfiles = require_tool("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # Debian's base-passwd already has dialout (gid 20); sysusers adds the member only.
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    for kind in ("sysusers.d", "tmpfiles.d"):
        target = root / "usr/lib" / kind
        target.mkdir(parents=True)
        shutil.copy(SYSTEMD / kind / "dicom-gateway.conf", target)
    subprocess.run([sysusers, f"--root={root}", "dicom-gateway.conf"], check=True, timeout=60)
    passwd = (root / "etc/passwd").read_text()
    group = (root / "etc/group").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("dicom-gateway:"))
    uid, gid, shell = user.split(":")[2], user.split(":")[3], user.split(":")[6]
    assert int(uid) < 1000 and shell == "/usr/sbin/nologin"  # a system user, no login
    assert "dialout:x:20:dicom-gateway" in group.splitlines()

    done = subprocess.run(
        [tmpfiles, f"--root={root}", "--create", "dicom-gateway.conf"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    state = (root / "var/lib/dicom-gateway").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o7777) == (int(uid), int(gid), 0o750)
    update = (root / "var/lib/dicom-gateway/update").stat()
    assert (update.st_uid, update.st_gid, update.st_mode & 0o7777) == (0, int(gid), 0o770)
    config = (root / "etc/dicom-gateway").stat()
    assert (config.st_uid, config.st_gid) == (0, int(gid))
    assert (root / "etc/credstore").stat().st_mode & 0o777 == 0o700
    assert (root / "opt/dicom-gateway/releases").is_dir()


def test_journald_drop_in_keeps_a_bounded_persistent_journal() -> None:
    text = (SYSTEMD / "journald.conf.d/dicom-gateway.conf").read_text()
    keys = dict(line.split("=", 1) for line in text.splitlines() if line and line[0] not in "#;[")
    # Every key is one journald knows (its shipped journald.conf lists them all, commented).
    shipped = Path("/etc/systemd/journald.conf")
    if shipped.exists():
        known = set(re.findall(r"^#?(\w+)=", shipped.read_text(), re.M))
        assert set(keys) <= known, set(keys) - known
    assert keys["Storage"] == "persistent"
    sizes = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    max_use = int(keys["SystemMaxUse"][:-1]) * sizes[keys["SystemMaxUse"][-1]]
    assert max_use <= 512 << 20  # a small share of a 16-32 GB SD card
    assert "SystemKeepFree" in keys and "MaxRetentionSec" in keys
    span = analyze("timespan", keys["MaxRetentionSec"])
    assert span.returncode == 0, span.stderr
