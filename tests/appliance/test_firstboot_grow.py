"""Growing the data partition: the plan's rules, the real sfdisk on a card image file (partx and
resize2fs recorded), and the whole grow for real on a loop device with ext4 mounted (root)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.appliance.commands import SubprocessRunner
from gateway.appliance.firstboot import MARKERS, run
from gateway.appliance.partition import (
    MBR_MAX_SECTORS,
    Partition,
    PartitionTable,
    plan_grow,
)
from gateway.appliance.steps import StepStatus
from tests.appliance.fakebox import (
    MIB,
    SfdiskRunner,
    add_data_partition,
    firstboot_for,
    make_box,
    sfdisk_json,
    write_card_table,
)

ALIGN_SECTORS = 4 * MIB // 512


def table(*parts: tuple[int, int, int], label: str = "dos") -> PartitionTable:
    return PartitionTable(label, 512, tuple(Partition(n, s, z) for n, s, z in parts))


IMAGE = table((1, 8192, 8192), (2, 16384, 8192), (3, 24576, 8192), (4, 32768, 8192))


@pytest.mark.parametrize(
    ("tbl", "disk_bytes", "grow", "new_size"),
    [
        (IMAGE, 128 * MIB, True, 128 * MIB // 512 - 32768),  # fills the card, start kept
        (IMAGE, 128 * MIB + 4096, True, 128 * MIB // 512 - 32768),  # end rounded down to 4 MiB
        (IMAGE, 40960 * 512 + 3 * MIB, False, None),  # less than one 4 MiB unit to gain
        (IMAGE, 20 * MIB, False, None),  # a "smaller card": never shrinks
        (table((1, 8192, 8192), (4, 32768, 8192), (2, 49152, 8192)), 1 << 30, False, None),
        (table((1, 8192, 8192)), 1 << 30, False, None),  # no partition 4
        (table((4, 32768, 8192), label="gpt"), 1 << 30, False, None),  # only MBR is grown
    ],
)
def test_the_plan_grows_only_the_last_partition_aligned_and_never_shrinks(
    tbl: PartitionTable, disk_bytes: int, grow: bool, new_size: int | None
) -> None:
    plan = plan_grow(tbl, disk_bytes)
    assert (plan.grow, plan.new_size) == (grow, new_size), plan.reason
    if new_size is not None:
        assert (32768 + new_size) % ALIGN_SECTORS == 0


def test_the_plan_stops_at_what_an_mbr_can_address() -> None:
    plan = plan_grow(IMAGE, 4 << 40)  # a 4 TiB card
    assert plan.new_size is not None
    assert 32768 + plan.new_size <= MBR_MAX_SECTORS


def test_the_real_sfdisk_grows_partition_4_on_the_card_and_keeps_the_rest(tmp_path: Path) -> None:
    if shutil.which("sfdisk") is None:
        pytest.skip("sfdisk (util-linux) is not installed")
    root = make_box(tmp_path / "root")
    disk = add_data_partition(root, card_mib=128)
    before = sfdisk_json(disk)
    runner = SfdiskRunner()
    records = {r.name: r.result for r in run(firstboot_for(root, runner))}
    assert records["grow-data"].status is StepStatus.DONE, records["grow-data"]
    after = sfdisk_json(disk)
    old = before["partitions"]
    new = after["partitions"]
    assert isinstance(old, list) and isinstance(new, list)
    assert new[:3] == old[:3]  # boot, rootA, rootB untouched (types, bootable flag)
    assert new[3]["start"] == old[3]["start"] and new[3]["type"] == old[3]["type"] == "83"
    assert new[3]["start"] + new[3]["size"] == 128 * MIB // 512
    assert after["id"] == before["id"]
    argv = [" ".join(c).replace(str(root), "") for c in runner.calls]
    assert argv == [
        "sfdisk --json /dev/vda",
        "sfdisk --dump /dev/vda",
        "sfdisk --no-reread --no-tell-kernel --wipe=never --wipe-partitions=never -N 4 /dev/vda",
        "partx --update --nr 4 /dev/vda",
        "resize2fs /dev/vda4",
    ]
    backup = (root / MARKERS.lstrip("/") / "partition-table.before").read_text()
    assert f"size={old[3]['size']}" in backup.replace(" ", "")
    # A cut after the table but before the marker: the next boot only grows the file system.
    (root / MARKERS.lstrip("/") / "grow-data.done").unlink()
    runner.calls.clear()
    again = {r.name: r.result for r in run(firstboot_for(root, runner))}
    assert again["grow-data"].status is StepStatus.UNCHANGED
    assert [c[0] for c in runner.calls] == ["sfdisk", "resize2fs"]
    assert sfdisk_json(disk) == after


def test_a_failing_resize2fs_fails_the_step_and_it_is_tried_at_the_next_boot(
    tmp_path: Path,
) -> None:
    root = make_box(tmp_path / "root")
    add_data_partition(root)

    class Refusing(SfdiskRunner):
        def run(self, argv, stdin=None):  # type: ignore[no-untyped-def]
            if argv[0] == "resize2fs":
                self.calls.append(tuple(argv))
                from gateway.appliance.commands import CommandResult

                return CommandResult(tuple(argv), 1, "", "resize2fs: Device or resource busy")
            return super().run(argv, stdin)

    records = {r.name: r.result for r in run(firstboot_for(root, Refusing()))}
    assert records["grow-data"].status is StepStatus.FAILED
    assert "Device or resource busy" in records["grow-data"].summary
    assert not (root / MARKERS.lstrip("/") / "grow-data.done").exists()
    # Every other step still ran: the token is on the card.
    assert (root / "boot/firmware/SETUP-TOKEN.txt").exists()
    assert "grow-data" in (root / "boot/firmware/FIRSTBOOT-REPORT.txt").read_text()


# --- for real: a loop device, its partition 4 formatted ext4 and mounted, grown online ----------


CAP_SYS_RESOURCE = 24


def has_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


@contextlib.contextmanager
def loop_card(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """A 68 MiB card image with the image's table on a loop device, partition 4 ext4 mounted;
    the card then made 128 MiB (as a larger card is). Yields (image, loop device, mount)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup for a loop device")
    image = tmp_path / "card.img"
    write_card_table(image, 68, 68)
    try:
        loop = _sh("losetup", "--find", "--show", "--partscan", str(image)).strip()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"no loop device here: {exc.stderr.strip()}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        part = f"{loop}p4"
        if not Path(part).exists():
            # A loop driver loaded without max_part ignores --partscan; partx adds them.
            subprocess.run(["partx", "--add", loop], capture_output=True, check=False, timeout=60)
        if not Path(part).exists():
            pytest.skip(f"the kernel made no {part} (partition scan unavailable)")
        _sh("mkfs.ext4", "-q", "-L", "dgdata", part)
        _sh("mount", "-o", "noatime,data=journal", part, str(mnt))
        mounted = True
        with image.open("r+b") as fh:
            fh.truncate(128 * MIB)
        _sh("losetup", "--set-capacity", loop)
        yield image, loop, mnt
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False, timeout=60)
        subprocess.run(["losetup", "-d", loop], check=False, timeout=60)


def test_the_data_partition_and_its_mounted_ext4_grow_for_real(tmp_path: Path) -> None:
    for tool in ("sfdisk", "partx", "resize2fs", "mkfs.ext4"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with loop_card(tmp_path) as (_image, loop, mnt):
        root = make_box(tmp_path / "root")
        # The fake root sees the real mount as /data, and the real device nodes and sysfs.
        line = next(
            ln
            for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if ln.split()[4] == str(mnt)
        )
        fields = line.split()
        fields[4] = "/data"
        (root / "proc/self/mountinfo").write_text(" ".join(fields) + "\n")
        devnum = fields[2]
        link = root / "sys/dev/block" / devnum
        link.parent.mkdir(parents=True)
        link.symlink_to(f"/sys/dev/block/{devnum}")
        name = Path(loop).name
        (root / "dev" / name).symlink_to(loop)
        (root / "dev" / f"{name}p4").symlink_to(f"{loop}p4")
        small = os.statvfs(mnt)
        records = {r.name: r.result for r in run(firstboot_for(root, SubprocessRunner()))}
        # The table (sfdisk) and the kernel's view of the mounted partition (partx) first.
        sectors = int(Path(f"/sys/class/block/{name}p4/size").read_text())
        start = int(Path(f"/sys/class/block/{name}p4/start").read_text())
        assert start + sectors == 128 * MIB // 512
        if not has_cap_sys_resource():
            # ext4's online resize ioctl needs it; a sandbox may have dropped it.
            assert "Permission denied to resize" in records["grow-data"].summary
            pytest.skip("table and partx grew for real; online resize2fs needs CAP_SYS_RESOURCE")
        assert records["grow-data"].status is StepStatus.DONE, records["grow-data"]
        big = os.statvfs(mnt)
        assert big.f_blocks * big.f_frsize > 3 * small.f_blocks * small.f_frsize  # online
        # The next boot finds nothing to do (and resize2fs says so).
        (root / MARKERS.lstrip("/") / "grow-data.done").unlink()
        again = {r.name: r.result for r in run(firstboot_for(root, SubprocessRunner()))}
        assert again["grow-data"].status is StepStatus.UNCHANGED
        assert os.statvfs(mnt).f_blocks == big.f_blocks
