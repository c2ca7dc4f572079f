"""``dicom-gateway share mount|unmount`` as dicom-gateway-cifs.service runs them (as root).

A stand-in mount.cifs (and mount) on PATH logs what it was asked; the kernel here has no cifs.
Only names the old CLI had are used, so these tests say what the old code did wrong.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ingest.support import GATEWAY, gateway_folder, mount_root
from tests.peers import free_port, require_tool
from tests.realfs import network_lookalike
from tests.systemd_sandbox import sandbox_environment, service_settings


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return mount_root(tmp_path)


def _stub_mount(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH with mount and mount.cifs stand-ins that log their arguments and what the target
    argument names (readlink: a /proc/self/fd path shows the folder it is)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "mount.log"
    bin_dir.mkdir()
    for name in ("mount", "mount.cifs"):
        stub = bin_dir / name
        stub.write_text(
            f'#!/bin/sh\necho "{name} $*" >> {log}\n'
            f'for a in "$@"; do case "$a" in /proc/*) readlink "$a" >> {log};; esac; done\n'
        )
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def _config(
    tmp_path: Path, folders: dict[str, Path], server: str = "10.0.0.5", port: int = 445
) -> Path:
    lines = [f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n']
    for name, path in folders.items():
        lines.append(
            f'[[ingest.folder]]\nname = "{name}"\npath = "{path}"\nsettle_seconds = 5\n'
            f'[ingest.folder.cifs]\nserver = "{server}"\nport = {port}\nshare = "{name}"\n'
            'username = "gw"\n'
        )
    config = tmp_path / "gateway.toml"
    config.write_text("\n".join(lines))
    return config


def _share(
    verb: str, config: Path, env: dict[str, str], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "share", verb, "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_share_mount_refuses_a_folder_outside_srv_without_running_mount(tmp_path: Path) -> None:
    """The unit's own command line (no --mount-root): a gateway.toml naming a folder outside
    /srv (here a temporary one; on a box /etc/systemd/system) mounts nothing."""
    target = gateway_folder(tmp_path / "etc-systemd-system")
    env, log = _stub_mount(tmp_path)
    done = _share("mount", _config(tmp_path, {"us": target}), env)
    assert done.returncode == 1
    assert (
        f"ingest.folder us: not mounted: {target} is not below the mount root /srv" in done.stderr
    )
    assert not log.exists()  # neither mount nor mount.cifs ran


def test_share_mount_mounts_the_allowed_folder_through_its_descriptor_and_skips_the_refused(
    tmp_path: Path, root: Path
) -> None:
    (root / "link").symlink_to(gateway_folder(tmp_path / "elsewhere"))
    env, log = _stub_mount(tmp_path)
    config = _config(tmp_path, {"bad": root / "link", "us": root / "us"})
    extra = ("--mount-root", str(root), "--owner", GATEWAY.pw_name)
    done = _share("mount", config, env, *extra)
    assert done.returncode == 1, done.stderr  # one refused
    assert f"ingest.folder bad: not mounted: {root / 'link'} is a symbolic link" in done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].startswith("mount.cifs //10.0.0.5/us /proc/self/fd/")
    assert calls[1] == str(root / "us")  # the descriptor named the judged folder
    assert f"mounted //10.0.0.5/us on {root / 'us'}" in done.stdout
    # Unmount: nothing is mounted there really (the stand-in did nothing), so nothing to do;
    # the link is refused again.
    off = _share("unmount", config, env, "--mount-root", str(root))
    assert off.returncode == 1
    assert f"ingest.folder bad: not unmounted: {root / 'link'} is a symbolic link" in off.stderr


def test_share_unmount_leaves_a_network_mount_outside_srv_alone(tmp_path: Path) -> None:
    """gateway.toml naming another network mount (here a FUSE one the mount table calls
    fuse.sshfs) outside /srv: stopping the unit must not unmount it."""
    target = tmp_path / "site-nfs"
    with network_lookalike(target):
        done = _share("unmount", _config(tmp_path, {"us": target}), dict(os.environ))
        points = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
        assert str(target) in points, done.stdout + done.stderr  # still mounted
        assert done.returncode == 1
        assert f"ingest.folder us: not unmounted: {target} is not below the mount root /srv" in (
            done.stderr
        )


# --- under the unit's sandbox ----------------------------------------------------------------

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "dicom-gateway-cifs.service"


def _sandboxed(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The unit's seccomp rules (loaded at interpreter start, inherited by mount.cifs), its
    capability bounding set and NoNewPrivileges=, as a prefix and environment for the CLI."""
    setpriv = require_tool("setpriv")
    settings = service_settings(UNIT)
    assert settings["NoNewPrivileges"] == ["yes"]
    caps = settings["CapabilityBoundingSet"][-1].split()
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    prefix = [setpriv, "--no-new-privs", f"--bounding-set={bounding}"]
    return prefix, {**env, **sandbox_environment(UNIT, tmp_path / "sandbox")}


def _sandboxed_mount(
    tmp_path: Path, root: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    prefix, env = _sandboxed(tmp_path, env)
    credstore = tmp_path / "credstore"
    credstore.mkdir(mode=0o700)
    for name in ("new", "us"):
        (credstore / f"cifs-{name}.cred").write_text("password=not-a-real-one\n")
    # A closed loopback port: a kernel with cifs is refused at once, never left waiting.
    folders = {"new": root / "new", "us": root / "us"}
    config = _config(tmp_path, folders, server="127.0.0.1", port=free_port())
    argv = [sys.executable, "-m", "gateway", "share", "mount", "--config", str(config)]
    extra = ["--mount-root", str(root), "--owner", GATEWAY.pw_name, "--credstore", str(credstore)]
    return subprocess.run(
        prefix + argv + extra, capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_share_mount_walks_makes_and_hands_over_folders_within_the_units_sandbox(
    tmp_path: Path, root: Path
) -> None:
    """Seccomp (system calls, address families, W^X), capabilities and no new privileges as
    the unit sets them: the walk, the folder made for the gateway (CAP_CHOWN) and the call."""
    env, log = _stub_mount(tmp_path)
    done = _sandboxed_mount(tmp_path, root, env)
    assert done.returncode == 0, done.stderr
    info = (root / "new").stat()
    assert (info.st_uid, info.st_gid) == (GATEWAY.pw_uid, GATEWAY.pw_gid)
    assert log.read_text().splitlines()[1::2] == [str(root / "new"), str(root / "us")]


def test_the_real_mount_cifs_reaches_the_kernel_within_the_units_sandbox(
    tmp_path: Path, root: Path
) -> None:
    """Debian's mount.cifs (cifs-utils), which asks libcap-ng for CAP_DAC_* and changes into
    the /proc/self/fd folder: it gets as far as mount(2), which answers as this kernel can
    (no cifs module here: ENODEV; else nothing listening: no suitable address), never EPERM."""
    require_tool("mount.cifs")
    done = _sandboxed_mount(tmp_path, root, dict(os.environ))
    assert done.returncode == 1
    reached = ("mount error(19): No such device", "Unable to find suitable address")
    for name in ("new", "us"):
        line = next(x for x in done.stderr.split("//127.0.0.1/")[1:] if x.startswith(name))
        assert line.startswith(f"{name} on {root / name}: ") and any(r in line for r in reached)
    assert "Operation not permitted" not in done.stderr
    assert "Unable to apply new capability set" not in done.stderr
