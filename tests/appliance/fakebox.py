"""A fake appliance root for first-boot tests, and a runner that records the commands.

:func:`make_box` lays out in a temporary folder what the image and the initramfs leave before
first boot: the accounts sysusers made (``dicom-gateway`` as 990:990), the transient
machine-id systemd made, a DMI product UUID, the image's default configuration (the real file
from image-build/), the empty configuration and state folders the fstab binds give, the card's
FAT folder, and ``/proc/self/mountinfo`` saying /data is mounted (a tmpfs: nothing to grow).
``/dev/console`` is a plain file, so what first boot prints there can be read back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.appliance.commands import CommandResult, SubprocessRunner
from gateway.appliance.firstboot import Firstboot, NoHost
from gateway.clock import FakeClock

REPO = Path(__file__).resolve().parents[2]
IMAGE_DEFAULT_CONFIG = REPO / "image-build/rootfs/usr/share/dicom-gateway/gateway.toml"
SERVICE_ID = 990
MACHINE_ID = "0123456789abcdef0123456789abcdef"
DMI_UUID = "4C4C4544-0042-3510-8051-B2C04F4A4E32"  # a Dell-style product UUID
SERIAL = "4c4c4544"  # its first 8 hex digits
MOUNTINFO_TMPFS = "30 1 0:45 / /data rw,noatime shared:1 - tmpfs tmpfs rw\n"


def make_box(root: Path) -> Path:
    """The fake root described above; returns ``root``."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        f"dicom-gateway:x:{SERVICE_ID}:{SERVICE_ID}::/var/lib/dicom-gateway:/usr/sbin/nologin\n"
    )
    (root / "etc/group").write_text(f"root:x:0:\ndicom-gateway:x:{SERVICE_ID}:\n")
    (root / "etc/machine-id").write_text(MACHINE_ID + "\n")
    config_dir = root / "etc/dicom-gateway"
    config_dir.mkdir(mode=0o770)
    os.chown(config_dir, 0, SERVICE_ID)
    state = root / "var/lib/dicom-gateway"
    state.mkdir(parents=True, mode=0o750)
    os.chown(state, SERVICE_ID, SERVICE_ID)
    dmi = root / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "product_uuid").write_text(DMI_UUID + "\n")
    shipped = root / "usr/share/dicom-gateway/gateway.toml"
    shipped.parent.mkdir(parents=True)
    shutil.copyfile(IMAGE_DEFAULT_CONFIG, shipped)
    (root / "boot/firmware").mkdir(parents=True)
    (root / "data/system").mkdir(parents=True)  # the initramfs hook makes it
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/mountinfo").write_text(MOUNTINFO_TMPFS)
    (root / "dev").mkdir()
    (root / "dev/console").write_bytes(b"")
    (root / "run").mkdir()
    return root


@dataclass
class RecordingRunner:
    """Records each command line; answers from ``answer`` (default: success, no output)."""

    answer: Callable[[tuple[str, ...], str | None], CommandResult] | None = None
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        line = tuple(argv)
        self.calls.append(line)
        if self.answer is not None:
            return self.answer(line, stdin)
        return CommandResult(line, 0, "", "")


def firstboot_for(root: Path, runner: RecordingRunner | None = None) -> Firstboot:
    """A Firstboot on the fake root, with a fake clock, no live host name, fixed random hex."""
    return Firstboot(
        root=root,
        boot=root / "boot/firmware",
        runner=runner or RecordingRunner(),
        clock=FakeClock(),
        host=NoHost(),
        random_hex=lambda n: "ab" * n,
        version="12.0.0",
    )


# --- a card with the image's partition table, for the grow step ---------------------------------

MIB = 1024 * 1024
DATA_DEVNUM = "254:4"  # what a virtio disk's 4th partition is


def image_layout() -> object:
    """image-build/layout.py, the module the image's own table comes from."""
    import importlib
    import sys

    recipe = str(REPO / "image-build")
    if recipe not in sys.path:
        sys.path.insert(0, recipe)
    return importlib.import_module("layout")


def write_card_table(disk: Path, image_mib: int, card_mib: int) -> None:
    """A sparse ``disk`` of ``card_mib`` MiB holding the image's table, shrunk to ``image_mib``
    (each partition a quarter of the image after the first 4 MiB), written by the real sfdisk."""
    layout = image_layout()
    quarter = (image_mib - 4) // 4
    specs = tuple(
        layout.PartitionSpec(s.label, s.fs, quarter, s.mbr_type, s.bootable)  # type: ignore[attr-defined]
        for s in layout.TABLE  # type: ignore[attr-defined]
    )
    parts = layout.plan(specs)  # type: ignore[attr-defined]
    with disk.open("wb") as fh:
        fh.truncate(image_mib * MIB)
    script = layout.sfdisk_script(parts, "0c0ffee0")  # type: ignore[attr-defined]
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", str(disk)],
        input=script,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    with disk.open("r+b") as fh:
        fh.truncate(card_mib * MIB)  # the card is larger than the image


def add_data_partition(root: Path, card_mib: int = 128, image_mib: int = 68) -> Path:
    """Make /data a partition of a virtio disk in the fake root: mountinfo, sysfs and
    ``/dev/vda`` as a sparse file with the image's table; returns the disk file."""
    (root / "proc/self/mountinfo").write_text(
        f"30 1 {DATA_DEVNUM} / /data rw,noatime shared:1 - ext4 /dev/vda4 rw,data=journal\n"
    )
    part = root / "sys/devices/platform/virtio/block/vda/vda4"
    part.mkdir(parents=True)
    (part / "partition").write_text("4\n")
    link = root / "sys/dev/block" / DATA_DEVNUM
    link.parent.mkdir(parents=True)
    link.symlink_to("../../devices/platform/virtio/block/vda/vda4")
    disk = root / "dev/vda"
    write_card_table(disk, image_mib, card_mib)
    return disk


def sfdisk_json(disk: Path) -> dict[str, object]:
    """The real sfdisk's view of ``disk``'s table."""
    done = subprocess.run(
        ["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True, timeout=30
    )
    table: dict[str, object] = json.loads(done.stdout)["partitiontable"]
    return table


class SfdiskRunner(RecordingRunner):
    """sfdisk for real (on the image file), the rest recorded: partx and resize2fs need the
    kernel and a mounted file system (tests/appliance/test_firstboot_grow.py runs those too)."""

    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        self.calls.append(tuple(argv))
        if argv[0] == "sfdisk":
            return SubprocessRunner().run(argv, stdin)
        return CommandResult(tuple(argv), 0, "", "")
