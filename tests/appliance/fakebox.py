"""A fake appliance root for first-boot tests, and a runner that records the commands.

:func:`make_box` lays out in a temporary folder what the image and the initramfs leave before
first boot: the accounts sysusers made (``dicom-gateway`` as 990:990), the transient
machine-id systemd made, a DMI product UUID, the image's default configuration (the real file
from image-build/), the empty configuration and state folders the fstab binds give, the card's
FAT folder, and ``/proc/self/mountinfo`` saying /data is mounted (a tmpfs: nothing to grow).
``/dev/console`` is a plain file, so what first boot prints there can be read back.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.appliance.commands import CommandResult
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
