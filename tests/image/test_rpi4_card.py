"""The rpi4 image's FAT partition, as the Pi 4's boot ROM and firmware read it (make image-test).

No Pi here: what is checked is what the firmware needs and what raspi-firmware's hook wrote from
customize.sh's settings, read out of the shipped ``.img.xz`` with mtools: the GPU firmware and
its fixup file for the Pi 4, the Pi 4's device tree, the kernel and initramfs config.txt names,
and a cmdline.txt that mounts root slot A by label read-only with the consoles on HDMI and the
serial line. The chroot's own root device or ``rw`` as the last word would leave a box that does
not boot or writes its root file system.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.image.box import Fat, partitions
from tests.peers import require_tool

pytestmark = pytest.mark.image

TREE = Path(__file__).resolve().parents[2]


def rpi4_image() -> Path:
    version = re.search(
        r'^__version__ = "(.+)"$', (TREE / "gateway/__init__.py").read_text(), re.MULTILINE
    )
    assert version
    default = TREE / "build/image" / f"dicom-gateway-{version.group(1)}-rpi4-arm64.img.xz"
    path = Path(os.environ.get("RPI4_IMAGE", default))
    assert path.is_file(), f"{path}: build it first (make image VARIANTS=rpi4)"
    return path


@pytest.fixture(scope="module")
def fat(tmp_path_factory: pytest.TempPathFactory) -> Fat:
    for tool in ("xz", "sfdisk", "mtype", "mdir"):
        require_tool(tool)
    # The table and the FAT are in the first 300 MiB: no need to unpack the whole card.
    head = tmp_path_factory.mktemp("rpi4") / "head.img"
    with head.open("wb") as out:
        xz = subprocess.Popen(["xz", "-dc", str(rpi4_image())], stdout=subprocess.PIPE)
        assert xz.stdout is not None
        left = 300 << 20
        while left > 0 and (chunk := xz.stdout.read(min(left, 1 << 20))):
            out.write(chunk)
            left -= len(chunk)
        xz.kill()
        xz.stdout.close()
        xz.wait()
    first = partitions(head)[0]
    return Fat(head, first.offset)


def test_the_fat_has_what_the_pi_4_firmware_boots_from(fat: Fat) -> None:
    names = {n.lower() for n in fat.names()}
    for needed in ("start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "config.txt", "cmdline.txt"):
        assert needed in names, (needed, sorted(names))
    config = (fat.read("config.txt") or b"").decode()
    assert "arm_64bit=1" in config
    kernel = re.search(r"^kernel=(\S+)$", config, re.MULTILINE)
    initramfs = re.search(r"^initramfs (\S+)", config, re.MULTILINE)
    assert kernel and initramfs, config
    assert kernel.group(1).lower() in names and initramfs.group(1).lower() in names
    assert "enable_uart=1" in config
    assert re.search(r"^\[pi4\]\ncore_freq=360\n\[all\]$", config, re.MULTILINE), config


def test_cmdline_mounts_slot_a_read_only_with_both_consoles(fat: Fat) -> None:
    words = shlex.split((fat.read("cmdline.txt") or b"").decode())
    assert "root=LABEL=rootA" in words, words
    assert [w for w in words if w in ("ro", "rw")][-1] == "ro", words  # the last one counts
    consoles = [w.split("=", 1)[1] for w in words if w.startswith("console=")]
    assert consoles == ["ttyS1,115200", "tty0"], consoles  # the last is /dev/console: HDMI
    assert "rootwait" in words
