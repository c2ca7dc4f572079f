"""The units in systemd/ as systemd itself reads them, without systemd as PID 1.

`systemd-analyze verify` and `security --offline=true` run against a temporary root (--root):
the host's own unit directory copied in (for sysinit.target and friends), our units under
/etc/systemd/system, and a fake /opt/dicom-gateway/current/bin/dicom-gateway, because verify
refuses an ExecStart= binary that does not exist. sysusers.d and tmpfiles.d run for real into
that root.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import select
import shlex
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from gateway.appliance.nettrial import (
    MIN_CONFIRM_SECONDS,
    REQUESTS_DIR,
    ROLLBACK_TIMER,
    SPOOL_DIR,
    STATUS_FILE,
)
from gateway.appliance.network import APPLIED_FILE, NETWORK_FILE, TIMESYNCD_FILE
from gateway.cli import build_parser
from gateway.configstore import marker_path, write_durably, write_marker
from gateway.spool.durable import write_bytes_durably
from tests.peers import require_tool
from tests.systemd_sandbox import service_settings, unit_entries

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
# Every unit in systemd/, whoever adds it: a new unit is verified without being listed here.
UNITS = tuple(
    sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer", ".path"))
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
    # Our executable, and a stand-in for each system program a unit runs (smbd, kill, ...): the
    # image's package lists put those there (tests/image_build); here the units are the subject.
    for program in {"/opt/dicom-gateway/current/bin/dicom-gateway", *system_programs()}:
        binary = root / program.lstrip("/")
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\nexit 0\n")
        binary.chmod(0o755)
    return root


def system_programs() -> set[str]:
    """Absolute programs outside /opt that our units' Exec*= lines name."""
    found: set[str] = set()
    for path in [SYSTEMD / name for name in UNITS] + sorted((SYSTEMD / DROP_IN).glob("*.conf")):
        for key, values in service_settings(path).items():
            if not key.startswith("Exec"):
                continue
            for value in values:
                words = shlex.split(value) if value else []
                program = words[0].lstrip("-@:+!") if words else ""
                if program.startswith("/") and not program.startswith("/opt/"):
                    found.add(program)
    return found


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


# Each service's ceiling in `systemd-analyze security --offline`: a change that widens one fails
# here, and a new unit must be placed on purpose. The two at 9.6 run as unconfined root, and why:
# first boot repartitions the card (sfdisk, partx, resize2fs on the mounted /data), writes the
# FAT, /etc/dicom-gateway and /data, sets the host name; smbd is Debian's, which ships it
# unconfined too (it changes to each account's identity, needs its own lock and state folders
# and the passdb). Both exposed only to what root already controls: the card and the config.
EXPOSURE_CEILING = {
    "dicom-gateway.service": OK_EXPOSURE,
    "dicom-gateway-cifs.service": 4.5,
    "dicom-gateway-firstboot.service": 9.6,
    "dicom-gateway-healthcheck.service": 4.0,
    "dicom-gateway-network.service": 3.0,
    "dicom-gateway-network-apply.service": 2.8,
    "dicom-gateway-network-rollback.service": 2.8,
    "dicom-gateway-smb.service": 9.6,
    "dicom-gateway-smb-config.service": 1.5,
    "dicom-gateway-update.service": 4.0,
}


def test_every_service_stays_within_its_exposure_ceiling(tmp_path: Path) -> None:
    services = {u for u in UNITS if u.endswith(".service")}
    assert services == set(EXPOSURE_CEILING), services ^ set(EXPOSURE_CEILING)
    root = make_root(tmp_path)
    over = {u: e for u in sorted(services) if (e := exposure(root, u)) > EXPOSURE_CEILING[u]}
    assert not over, over


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


# Root with CAP_SYS_ADMIN in the host's mount namespace is what mounting needs; the unit was 9.6
# ("UNSAFE") before its sandbox, and the settings left out are listed with reasons in its header.
CIFS_EXPOSURE = 4.5
# Each of these gives the unit a mount namespace of its own (systemd's
# exec_needs_mount_namespace()), where the share would be mounted unseen by the gateway.
MOUNT_NAMESPACE_SETTINGS = (
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateIPC",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "RootDirectory",
    "RootImage",
    "MountFlags",
    "PrivateUsers",
)


def test_cifs_unit_is_sandboxed_but_mounts_where_the_gateway_sees_it(tmp_path: Path) -> None:
    unit = SYSTEMD / "dicom-gateway-cifs.service"
    assert exposure(make_root(tmp_path), "dicom-gateway-cifs.service") <= CIFS_EXPOSURE
    s = service_settings(unit)
    assert not set(MOUNT_NAMESPACE_SETTINGS) & set(s), set(MOUNT_NAMESPACE_SETTINGS) & set(s)
    one = {key: values[-1] for key, values in s.items()}
    assert set(one["CapabilityBoundingSet"].split()) == {
        "CAP_SYS_ADMIN",  # mount(2), umount2(2)
        "CAP_DAC_READ_SEARCH",  # mount.cifs (libcap-ng) fails to start without the two DAC caps
        "CAP_DAC_OVERRIDE",
        "CAP_CHOWN",  # a missing mount folder made and given to the gateway
    }
    assert one["NoNewPrivileges"] == "yes" and one["RestrictSUIDSGID"] == "yes"
    assert s["SystemCallFilter"] == ["@system-service @mount"]
    assert one["ExecStart"].endswith(" share mount --config /etc/dicom-gateway/gateway.toml")
    assert one["ExecStop"].endswith(" share unmount --config /etc/dicom-gateway/gateway.toml")


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


# --- the appliance's first boot: its unit, the console text agetty shows, SSH -------------------

IMAGE_ROOTFS = SYSTEMD.parent / "image-build/rootfs"


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Section.Key`` of a unit with its values, repeated keys and lists split."""
    settings: dict[str, list[str]] = {}
    for section, key, value in unit_entries(unit):
        settings.setdefault(f"{section}.{key}", []).extend(value.split())
    return settings


def test_firstboot_runs_after_the_mounts_and_before_what_reads_its_files() -> None:
    from gateway.appliance.cli_firstboot import EXIT_ATTENTION

    unit = unit_settings(SYSTEMD / "dicom-gateway-firstboot.service")
    # An ordinary service: after sysinit/basic (fstab binds, tmpfiles), not part of sysinit,
    # where a long resize2fs would hold up the whole boot, the gettys included.
    assert "Unit.DefaultDependencies" not in unit
    assert "sysinit.target" not in unit["Unit.Before"] + unit["Install.WantedBy"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]
    # Nothing of sysinit (the network render is there) may be after it: an ordering cycle.
    assert not {"dicom-gateway-network.service", "network-pre.target"} & set(unit["Unit.Before"])
    for consumer in (
        "avahi-daemon.service",  # reads the service file and the host name
        "dicom-gateway.service",  # the configuration, certificate and token
        "getty-pre.target",  # the console text before the first prompt
    ):
        assert consumer in unit["Unit.Before"], consumer
    assert "getty-pre.target" in unit["Unit.Wants"]  # passive
    assert unit["Unit.ConditionPathIsMountPoint"] == ["/data"]  # never on a .deb install's /
    assert {"/data", "/boot/firmware", "/etc/dicom-gateway", "/var/lib/dicom-gateway"} <= set(
        unit["Unit.RequiresMountsFor"]
    )
    assert "fake-hwclock.service" in unit["Unit.After"]  # the certificate's dates
    assert unit["Service.SuccessExitStatus"] == [str(EXIT_ATTENTION)]
    assert unit["Service.Type"] == ["oneshot"] and unit["Service.RemainAfterExit"] == ["yes"]


def test_agetty_shows_the_console_text_through_etc_issue_d_not_run_issue_d(
    tmp_path: Path,
) -> None:
    import os

    from gateway.appliance import console

    agetty = require_tool("agetty")
    require_tool("unshare")
    require_tool("script")
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    link = IMAGE_ROOTFS / "etc/issue.d/50-dicom-gateway.issue"
    assert link.is_symlink() and os.readlink(link) == console.ISSUE_FILE
    text = console.issue_text("dicom-gateway-4c4c4544", 8443, "ab12-cd34-ef56-0789-abcd")
    ours = tmp_path / "ours.issue"
    ours.write_text(text)
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    script = f"""set -e
mount --make-rprivate /
mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc
mount -t tmpfs tmpfs /run
test -e /etc/issue  # Debian's, as in the image
mkdir -p /etc/issue.d {Path(console.ISSUE_FILE).parent} /run/issue.d
cp -P {link} /etc/issue.d/
cp {ours} {console.ISSUE_FILE}
echo OLD-PLACE > /run/issue.d/50-dicom-gateway.issue
script -qc '{agetty} --show-issue' /dev/null
"""
    done = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout.replace("\r\n", "\n")
    assert "One-time setup token: ab12-cd34-ef56-0789-abcd" in shown
    assert "https://dicom-gateway-4c4c4544.local:8443" in shown
    assert "OLD-PLACE" not in shown  # /run/issue.d is ignored while /etc/issue exists


def test_ssh_is_on_only_with_the_card_key_file_and_takes_keys_only() -> None:
    from gateway.appliance.firstboot import CARD_SSH_KEYS

    card_keys = f"/boot/firmware/{CARD_SSH_KEYS}"
    drop_in = unit_settings(IMAGE_ROOTFS / "etc/systemd/system/ssh.service.d/dicom-gateway.conf")
    # The file first boot reports on is the one that starts sshd.
    assert drop_in["Unit.ConditionPathExists"] == [card_keys]
    sshd: dict[str, list[str]] = {}
    for line in (
        (IMAGE_ROOTFS / "etc/ssh/sshd_config.d/dicom-gateway.conf").read_text().splitlines()
    ):
        if line.strip() and not line.startswith("#"):
            key, *values = line.split()
            sshd.setdefault(key.lower(), values)  # sshd: the first value of a keyword wins
    assert sshd["authorizedkeysfile"] == [card_keys]
    assert sshd["passwordauthentication"] == ["no"]
    assert sshd["kbdinteractiveauthentication"] == ["no"]
    assert sshd["permitemptypasswords"] == ["no"]
    assert sshd["permitrootlogin"] == ["prohibit-password"]


# --- the appliance's network units (docs/network.md) -------------------------------------------


def _exec_args_of(line: str) -> argparse.Namespace:
    """An Exec*= command line of ours parsed by the real CLI, as the box would run it."""
    argv = shlex.split(line)
    assert argv[0] == "/opt/dicom-gateway/current/bin/dicom-gateway"
    return build_parser().parse_args(argv[1:])


def _exec_args(unit: str) -> argparse.Namespace:
    """The unit's ExecStart= parsed by the real CLI."""
    return _exec_args_of(service_settings(SYSTEMD / unit)["ExecStart"][-1])


def _unit_values(unit: str) -> dict[str, list[str]]:
    """Every key=value of a unit file (any section), in order, comments left out."""
    out: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if line and line[0] not in "#;[" and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_network_units_run_the_verbs_the_trial_needs() -> None:
    verbs = {
        "dicom-gateway-network.service": "render",
        "dicom-gateway-network-apply.service": "handle",
        "dicom-gateway-network-rollback.service": "rollback-due",
    }
    for unit, verb in verbs.items():
        args = _exec_args(unit)
        assert (args.command, args.network_verb) == ("appliance", verb), unit
        # The default --root and --spool are the box's own: the path unit watches that spool.
        assert args.root == Path("/") and args.spool == SPOOL_DIR
        written = {NETWORK_FILE.parent, TIMESYNCD_FILE.parent, APPLIED_FILE.parent, SPOOL_DIR}
        values = service_settings(SYSTEMD / unit)["ReadWritePaths"]
        allowed = [Path(p.lstrip("-")) for value in values for p in value.split()]
        for path in written:
            assert any(path.is_relative_to(a) for a in allowed), (unit, path)


def test_network_is_rendered_before_networkd_and_timesyncd_start_at_every_boot() -> None:
    unit = _unit_values("dicom-gateway-network.service")
    before = " ".join(unit["Before"]).split()
    assert {"systemd-networkd.service", "systemd-timesyncd.service"} <= set(before)
    assert "dicom-gateway-firstboot.service" not in " ".join(unit["After"]).split()
    # The steps of first boot the render reads (serial, network.toml from the card) run first,
    # and a failure there does not stop the render ("-").
    pre = _exec_args_of(unit["ExecStartPre"][0].lstrip("-"))
    assert (pre.command, pre.early, pre.root) == ("appliance", True, Path("/"))
    assert unit["ExecStartPre"][0].startswith("-")
    assert unit["DefaultDependencies"] == ["no"]  # else it would order itself after sysinit
    assert unit["WantedBy"] == ["sysinit.target"]
    assert unit["Type"] == ["oneshot"]


# Units of Debian packages the image installs that a test machine may lack, with the ordering
# lines bookworm ships (the rest does not matter to ordering): systemd-analyze must see the
# boot's real graph, and a missing unit would silently take its edges away.
BOOKWORM_UNITS = {
    "fake-hwclock.service": (
        "[Unit]\nDefaultDependencies=no\nBefore=sysinit.target shutdown.target\n"
        "Conflicts=shutdown.target\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        "ExecStart=/bin/true\n[Install]\nWantedBy=sysinit.target\n"
    ),
    "systemd-timesyncd.service": (
        "[Unit]\nDefaultDependencies=no\nAfter=systemd-sysusers.service\n"
        "Before=time-set.target sysinit.target shutdown.target\nConflicts=shutdown.target\n"
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=sysinit.target\n"
    ),
    "avahi-daemon.service": (
        "[Unit]\nRequires=avahi-daemon.socket\n[Service]\nExecStart=/bin/true\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
}


def test_a_boot_with_every_appliance_unit_has_no_ordering_cycle(tmp_path: Path) -> None:
    """The whole boot as the image enables it: systemd breaks an ordering cycle by deleting a
    job, which on the box means a step silently not run (the network settings never rendered,
    so a static address is never set)."""
    root = make_root(tmp_path)
    system = root / "usr/lib/systemd/system"
    for name, text in BOOKWORM_UNITS.items():
        if not (system / name).exists():
            (system / name).write_text(text)
    appliance = list(UNITS)
    probe = root / "etc/systemd/system/boot-probe.target"
    probe.write_text(
        "[Unit]\nDescription=Every unit a booted box starts\n"
        f"Wants=sysinit.target multi-user.target {' '.join(appliance)} {' '.join(BOOKWORM_UNITS)}"
        " systemd-networkd.service\n"
    )
    done = verify(root, "boot-probe.target")
    found = done.stdout + done.stderr
    assert "ordering cycle" not in found.lower(), found
    assert "deleted" not in found, found


def test_panel_requests_reach_the_root_side_through_the_path_unit() -> None:
    path = _unit_values("dicom-gateway-network-apply.path")
    assert path["PathExistsGlob"] == [str(SPOOL_DIR / REQUESTS_DIR / "*.json")]
    assert path["Unit"] == ["dicom-gateway-network-apply.service"]
    assert path["WantedBy"] == ["paths.target"]
    assert "WantedBy" not in _unit_values("dicom-gateway-network-apply.service")


def test_rollback_timer_is_the_one_the_trial_starts_and_checks_often_enough() -> None:
    timer = _unit_values(ROLLBACK_TIMER)
    assert timer["Unit"] == ["dicom-gateway-network-rollback.service"]
    # Started by the apply only, for the trial's length: never enabled at boot.
    assert "WantedBy" not in timer

    def micros(key: str) -> int:
        span = analyze("timespan", timer[key][0])
        assert span.returncode == 0, span.stderr
        found = re.search(r"μs: (\d+)", span.stdout)
        assert found, span.stdout
        return int(found.group(1))

    # A rollback comes at most one period plus the accuracy after the deadline: within a fifth
    # of the shortest confirmation time the panel may ask for.
    late = max(micros("OnActiveSec"), micros("OnUnitActiveSec")) + micros("AccuracySec")
    assert late <= MIN_CONFIRM_SECONDS * 1_000_000 // 5


def test_tmpfiles_make_the_request_spool_with_its_privilege_boundary(tmp_path: Path) -> None:
    """The gateway's uid may put requests in requests/ and read the status root writes, but
    neither write the status nor touch root's side of the folder."""
    sysusers = require_tool("systemd-sysusers")
    tmpfiles = require_tool("systemd-tmpfiles")
    setpriv = require_tool("setpriv")
    # A root the gateway's uid may walk into (pytest's own tmp folders are root's 0700).
    root = Path(tempfile.mkdtemp(prefix="tmpfiles-", dir="/tmp"))
    try:
        root.chmod(0o755)
        (root / "etc").mkdir()
        (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\n")
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        for kind in ("sysusers.d", "tmpfiles.d"):
            (root / "usr/lib" / kind).mkdir(parents=True)
        shutil.copy(SYSTEMD / "sysusers.d/dicom-gateway.conf", root / "usr/lib/sysusers.d")
        for name in ("dicom-gateway.conf", "dicom-gateway-network.conf"):
            shutil.copy(SYSTEMD / "tmpfiles.d" / name, root / "usr/lib/tmpfiles.d")
        subprocess.run([sysusers, f"--root={root}"], check=True, timeout=60)
        user = next(
            line
            for line in (root / "etc/passwd").read_text().splitlines()
            if line.startswith("dicom-gateway:")
        )
        uid, gid = int(user.split(":")[2]), int(user.split(":")[3])
        done = subprocess.run(
            [tmpfiles, f"--root={root}", "--create"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        spool = root / SPOOL_DIR.relative_to("/")
        for path, mode in ((spool, 0o2750), (spool / REQUESTS_DIR, 0o2770)):
            info = path.stat()
            assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, gid, mode), path

        # Root's side writes the status as the keeper does; the gateway's uid acts through sh.
        write_bytes_durably(spool / STATUS_FILE, b'{"state": "applied"}', 0o640)

        def as_gateway(script: str) -> int:
            argv = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "sh", "-c"]
            return subprocess.run([*argv, script], cwd=spool, timeout=60, check=False).returncode

        assert as_gateway("echo '{}' > requests/.r.tmp && mv requests/.r.tmp requests/1.json") == 0
        assert as_gateway(f"cat {STATUS_FILE} >/dev/null") == 0
        assert as_gateway(f"echo forged > {STATUS_FILE}") != 0
        assert as_gateway("echo x > planted.json") != 0
        assert (spool / "requests/1.json").stat().st_gid == gid
    finally:
        shutil.rmtree(root)


# --- the box's SMB shares follow gateway.toml (issue 12) ---------------------------------------


def _gateway_config() -> Path:
    """The configuration file the gateway unit runs with (its ExecStart's --config)."""
    args = _exec_args("dicom-gateway.service")
    return Path(args.config)


def test_share_unit_reload_makes_the_accounts_and_smb_conf_before_smbd_rereads_it() -> None:
    smb = service_settings(SYSTEMD / "dicom-gateway-smb.service")
    first, hup = smb["ExecReload"]  # systemd runs several ExecReload= lines in order
    prepare = _exec_args_of(first)
    assert (prepare.command, prepare.share_cmd) == ("share", "prepare")
    assert Path(prepare.config) == _gateway_config()
    # The file smbd serves is the one the reload rewrites.
    start = shlex.split(smb["ExecStart"][-1])
    assert f"--configfile={prepare.out}" in start
    assert shlex.split(hup) == ["/bin/kill", "-HUP", "$MAINPID"]
    # The start makes the same accounts and file (one command for both).
    assert smb["ExecStartPre"] == [first]


def test_a_changed_gateway_toml_reloads_or_starts_the_share_unit(tmp_path: Path) -> None:
    path = _unit_values("dicom-gateway-smb-config.path")
    assert path["PathChanged"] == [str(_gateway_config())]
    assert path["Unit"] == ["dicom-gateway-smb-config.service"]
    assert path["WantedBy"] == ["paths.target"]
    # The watch is set on the data partition's folder (a bind mount), not the one below it.
    assert str(_gateway_config().parent) in " ".join(path["RequiresMountsFor"]).split()
    assert "MakeDirectory" not in path  # it would make gateway.toml a folder
    service = _unit_values("dicom-gateway-smb-config.service")
    assert "WantedBy" not in service  # started by the path unit only
    argv = shlex.split(
        service_settings(SYSTEMD / "dicom-gateway-smb-config.service")["ExecStart"][-1]
    )
    assert Path(argv[0]).name == "systemctl"
    # Reload when running; start (ExecCondition decides again) when it was skipped; queued
    # only, so the path unit watches again while the reload runs.
    assert argv[1:] == ["--no-block", "reload-or-restart", "dicom-gateway-smb.service"]
    assert exposure(make_root(tmp_path), "dicom-gateway-smb-config.service") <= OK_EXPOSURE


# systemd 252's inotify masks for PathChanged= (src/core/path.c, path_spec_watch): the file
# itself, and each folder on the way to it; only an event on the file's own watch triggers.
IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x4, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
PATH_CHANGED_FILE_MASK = (
    IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
)
PATH_CHANGED_FOLDER_MASK = IN_MOVE_SELF | IN_DELETE_SELF | IN_ATTRIB | IN_CREATE | IN_MOVED_TO


def test_the_panels_rename_into_place_fires_path_changed_as_systemd_watches(
    tmp_path: Path,
) -> None:
    """The panel replaces gateway.toml by temporary file and rename (configstore); the file
    systemd watched is then unlinked, which the kernel reports on that file's watch (IN_ATTRIB,
    its link count): PathChanged= fires. Another file written beside it (the trial marker) only
    makes systemd watch again, without triggering."""
    watched = Path(_unit_values("dicom-gateway-smb-config.path")["PathChanged"][0])
    assert watched == _gateway_config()
    libc = ctypes.CDLL(None, use_errno=True)
    config = tmp_path / "etc" / watched.name
    config.parent.mkdir()
    config.write_text("[gateway]\n")
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:

        def watch(path: Path, mask: int) -> int:
            wd = libc.inotify_add_watch(fd, str(path).encode(), mask)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            return int(wd)

        def events() -> list[tuple[int, int]]:
            found: list[tuple[int, int]] = []
            while select.select([fd], [], [], 0)[0]:
                data = os.read(fd, 65536)
                offset = 0
                while offset < len(data):
                    wd, mask, _, size = struct.unpack_from("iIII", data, offset)
                    found.append((wd, mask))
                    offset += 16 + size
            return found

        watch(config.parent, PATH_CHANGED_FOLDER_MASK)
        primary = watch(config, PATH_CHANGED_FILE_MASK)
        write_marker(config, {"state": "trial"})  # beside it, as a trial does
        assert marker_path(config).parent == config.parent
        assert all(wd != primary for wd, _ in events())
        write_durably(config, b"[gateway]\nlog_level = 'DEBUG'\n", 0o640)
        assert any(wd == primary and mask & IN_ATTRIB for wd, mask in events())
    finally:
        os.close(fd)
