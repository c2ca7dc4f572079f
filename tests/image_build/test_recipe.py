"""The image recipe's own consistency (image-build/checks.py), each check also shown failing."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TREE = Path(__file__).resolve().parents[2]
RECIPE = TREE / "image-build"
sys.path.insert(0, str(RECIPE))
checks = importlib.import_module("checks")
layout = importlib.import_module("layout")
units = importlib.import_module("units")


def test_the_recipe_as_it_is_has_no_problem() -> None:
    assert checks.all_problems() == []


def test_a_dependency_missing_from_the_lock_is_found() -> None:
    lock = (RECIPE / "requirements-arm64.lock").read_text()
    broken = "\n".join(line for line in lock.splitlines() if not line.startswith("pydicom=="))
    problems = checks.check_lock(broken, (TREE / "pyproject.toml").read_text())
    assert any("pydicom" in p for p in problems)
    unhashed = lock.replace(" --hash=sha256:", " #", 1)
    assert checks.check_lock(unhashed, (TREE / "pyproject.toml").read_text())


def test_a_misaligned_partition_is_refused() -> None:
    table = list(layout.TABLE)
    table[3] = dataclasses.replace(table[3], size_mib=250)
    assert any("4 MiB" in p for p in checks.check_layout(tuple(table)))
    for part in layout.plan():
        assert part.offset % layout.ALIGN == 0 and part.size % layout.ALIGN == 0


def test_sfdisk_writes_the_planned_table(tmp_path: Path) -> None:
    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk not installed")
    parts = layout.plan()
    disk = tmp_path / "disk.img"
    with disk.open("wb") as fh:
        fh.truncate(layout.disk_size(parts))
    script = layout.sfdisk_script(parts, "12345678")
    subprocess.run(["sfdisk", "-q", str(disk)], input=script.encode(), check=True)
    dump = subprocess.run(["sfdisk", "-d", str(disk)], capture_output=True, text=True, check=True)
    starts = [
        int(line.split("start=")[1].split(",")[0])
        for line in dump.stdout.splitlines()
        if "start=" in line
    ]
    assert starts == [p.start_sector for p in parts]
    assert all(s * 512 % (4 << 20) == 0 for s in starts)


def test_fstab_and_hook_problems_are_found() -> None:
    fstab = (RECIPE / "rootfs/etc/fstab").read_text()
    assert checks.check_fstab(fstab.replace("LABEL=dgdata", "LABEL=data"), layout.TABLE)
    assert checks.check_fstab(fstab.replace("ro,noatime", "noatime"), layout.TABLE)
    assert checks.check_fstab(fstab + "/swapfile none swap sw 0 0\n", layout.TABLE)
    hook = (RECIPE / checks.HOOK).read_text()
    assert checks.check_hook(hook.replace("label=dgdata", "label=data"), layout.TABLE)
    assert checks.check_hook(hook.replace("rw,noatime,data=journal", "rw"), layout.TABLE)


def test_every_file_of_systemd_is_placed(tmp_path: Path) -> None:
    placed = {p.source for p in units.placements(TREE / "systemd")}
    every = {
        p.relative_to(TREE / "systemd").as_posix()
        for p in (TREE / "systemd").rglob("*")
        if p.is_file()
    }
    assert every - placed == set(units.NOT_INSTALLED)
    fake = tmp_path / "systemd"
    shutil.copytree(TREE / "systemd", fake)
    (fake / "dicom-gateway-firstboot.service").write_text(
        "[Service]\nType=oneshot\n[Install]\nWantedBy=multi-user.target\n"
    )
    root = tmp_path / "root"
    assert "dicom-gateway-firstboot.service" in units.install(fake, root)
    (fake / "stray.conf").write_text("")
    with pytest.raises(ValueError, match=r"stray\.conf"):
        units.placements(fake)


def test_a_password_in_the_recipe_is_found() -> None:
    texts = checks.recipe_texts()
    assert checks.check_passwords(texts) == []
    broken = {**texts, "customize.sh": texts["customize.sh"] + "echo root:x | chpasswd\n"}
    assert checks.check_passwords(broken)
    broken = {
        **texts,
        "customize.sh": texts["customize.sh"].replace("passwd -l root", "passwd root"),
    }
    assert checks.check_passwords(broken)


def test_scripts_are_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    scripts = [
        *RECIPE.glob("*.sh"),
        *RECIPE.glob("rootfs/etc/initramfs-tools/*/*"),
        *RECIPE.glob("rootfs/etc/initramfs-tools/scripts/*/*"),
    ]
    scripts = [s for s in scripts if s.is_file()]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_flashed_boxs_default_configuration_offers_the_device_a_share_and_is_valid() -> None:
    """Browser-only commissioning: the panel has no form for a drop folder, so the image must
    ship one, served as a share (smbd runs only when a folder is shared) whose account can log
    in only once its password is set in the panel (Device accounts)."""
    from gateway.config import load_config
    from gateway.ingest.remote.smbconf import shared_folders

    shipped = RECIPE / "rootfs/usr/share/dicom-gateway/gateway.toml"
    config = load_config(shipped)
    (folder,) = shared_folders(config)
    assert (folder.share, folder.share_user) == ("export", "modality")
    # The one folder the gateway's unit may write (ReadWritePaths=), on the data partition.
    assert str(folder.path) == "/srv/drop"
    unit = (TREE / "systemd/dicom-gateway.service").read_text()
    assert "ReadWritePaths=-/srv/drop" in unit
    assert folder.filename_pattern is None  # bound to the room's selected procedure, or held
    assert config.destination == [] and config.web.enabled
