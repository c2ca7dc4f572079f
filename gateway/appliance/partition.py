"""Growing the data partition (4) to fill the card: a pure plan, then sfdisk, partx, resize2fs.

The plan (:func:`plan_grow`) decides from sizes alone; its rules:

* only an MBR (``dos``) table is grown (the Pi's boot ROM reads MBR; the image makes one);
* the partition must exist and be the last one on the disk: nothing after it is ever overlapped;
* its start never moves; its new end is the end of the disk rounded down to the alignment
  (4 MiB, as every partition of the image), and never past the 2^32 sectors an MBR can address;
* it grows only when that adds at least one alignment unit: a card a few sectors larger than
  the image, or a table grown at an earlier boot, gives "nothing to do";
* it never shrinks.

The effect (:func:`grow_data_partition`) is safe to cut at any instant. The table is one sector
that sfdisk writes in one write and syncs: after a cut it is the old or the new table. The
kernel is told the new size with ``partx --update`` (the partition is mounted: its start does
not change, so the kernel allows it). ``resize2fs`` then grows the mounted ext4 online; the
kernel journals an online resize, so a cut leaves the old or a larger, consistent filesystem,
and resize2fs at the next boot finishes the job (it is a no-op on a filesystem that already
fills its partition). The table before the change is kept once in the markers folder
(``partition-table.before``, ``sfdisk --dump`` format) so an engineer can see what was there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.appliance.commands import Runner, check
from gateway.appliance.files import under, write_file

ALIGN_BYTES = 4 * 1024 * 1024
MBR_MAX_SECTORS = 2**32  # an MBR entry holds 32-bit start and size
DATA_PARTITION = 4
DATA_MOUNT = "/data"


@dataclass(frozen=True)
class Partition:
    """One entry of the table, in sectors."""

    number: int
    start: int
    size: int

    @property
    def end(self) -> int:
        """The first sector after the partition."""
        return self.start + self.size


@dataclass(frozen=True)
class PartitionTable:
    """What ``sfdisk --json`` says of a disk."""

    label: str  # "dos" or "gpt"
    sector_size: int
    partitions: tuple[Partition, ...]


@dataclass(frozen=True)
class GrowPlan:
    """Grow or not, to what size (sectors), and why."""

    grow: bool
    new_size: int | None
    reason: str


@dataclass(frozen=True)
class DataPartition:
    """Where the data partition is: its disk, its number, its own device node."""

    disk: Path
    number: int
    device: Path


def parse_sfdisk_json(text: str) -> PartitionTable:
    """The table from ``sfdisk --json`` output; ValueError if it is not one."""
    try:
        table = json.loads(text)["partitiontable"]
        parts = []
        for entry in table.get("partitions", []):
            match = re.search(r"(\d+)$", str(entry["node"]))
            if match is None:
                raise ValueError(f"partition node without a number: {entry['node']!r}")
            parts.append(Partition(int(match.group(1)), int(entry["start"]), int(entry["size"])))
        return PartitionTable(str(table["label"]), int(table.get("sectorsize", 512)), tuple(parts))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not sfdisk --json output: {exc}") from None


def plan_grow(
    table: PartitionTable, disk_bytes: int, number: int = DATA_PARTITION, align: int = ALIGN_BYTES
) -> GrowPlan:
    """Whether partition ``number`` should grow to fill a disk of ``disk_bytes`` (rules above)."""
    if table.label != "dos":
        return GrowPlan(False, None, f"the partition table is {table.label}, not MBR: left alone")
    target = next((p for p in table.partitions if p.number == number), None)
    if target is None:
        return GrowPlan(False, None, f"there is no partition {number}")
    later = [p for p in table.partitions if p.number != number and p.start >= target.start]
    if later:
        return GrowPlan(
            False,
            None,
            f"partition {number} is not the last one (partition {later[0].number} follows)",
        )
    unit = max(align // table.sector_size, 1)
    disk_sectors = min(disk_bytes // table.sector_size, MBR_MAX_SECTORS)
    new_end = disk_sectors // unit * unit
    new_size = new_end - target.start
    if new_size - target.size < unit:
        return GrowPlan(False, None, "the partition already fills the card")
    return GrowPlan(True, new_size, f"{target.size} -> {new_size} sectors")


@dataclass(frozen=True)
class DataMount:
    """What is mounted at the data mount point: nothing, something that is not a partition of
    a disk (``partition`` None: a tmpfs, a whole disk), or a partition."""

    mounted: bool
    partition: DataPartition | None


def find_data_mount(root: Path, mount: str = DATA_MOUNT) -> DataMount:
    """What is mounted at ``mount``, from mountinfo and sysfs.

    The mount is matched by its major:minor in ``/proc/self/mountinfo`` (the last entry for the
    mount point: the one on top), and ``/sys/dev/block/<major:minor>`` names the partition, its
    disk (the parent in sysfs) and its number: this holds however the initramfs named the device
    (``LABEL=``, a by-label link).
    """
    try:
        mountinfo = under(root, "/proc/self/mountinfo").read_text()
    except FileNotFoundError:
        return DataMount(False, None)
    devnum = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == mount:
            devnum = fields[2]
    if devnum is None:
        return DataMount(False, None)
    node = under(root, f"/sys/dev/block/{devnum}").resolve()
    try:
        number = int((node / "partition").read_text().strip())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return DataMount(True, None)  # not a partition (a whole disk, a loop device, a tmpfs)
    return DataMount(
        True,
        DataPartition(
            disk=under(root, f"/dev/{node.parent.name}"),
            number=number,
            device=under(root, f"/dev/{node.name}"),
        ),
    )


def find_data_partition(root: Path, mount: str = DATA_MOUNT) -> DataPartition | None:
    """The partition mounted at ``mount``; None if nothing or no partition is mounted there."""
    return find_data_mount(root, mount).partition


def disk_size(disk: Path) -> int:
    """Bytes of a disk or image file (seek to its end: works for block devices and files)."""
    with disk.open("rb") as fh:
        return fh.seek(0, 2)


def read_table(runner: Runner, disk: Path) -> PartitionTable:
    """The disk's partition table, as sfdisk reads it."""
    return parse_sfdisk_json(check(runner.run(["sfdisk", "--json", str(disk)])).stdout)


def write_table(runner: Runner, disk: Path, number: int, start: int, new_size: int) -> None:
    """Give partition ``number`` the size ``new_size`` (sectors), its start unchanged.

    ``--no-reread``: the disk is in use (its partitions are mounted) and sfdisk would refuse;
    the kernel learns the new size from partx afterwards. No signature is wiped: the partition
    keeps its filesystem.
    """
    check(
        runner.run(
            [
                "sfdisk",
                "--no-reread",
                "--no-tell-kernel",
                "--wipe=never",
                "--wipe-partitions=never",
                "-N",
                str(number),
                str(disk),
            ],
            stdin=f"{start},{new_size}\n",
        )
    )


@dataclass(frozen=True)
class GrowResult:
    """What :func:`grow_data_partition` did."""

    plan: GrowPlan
    table_written: bool


def grow_data_partition(runner: Runner, part: DataPartition, backup: Path) -> GrowResult:
    """Plan, write the table if the plan says so, tell the kernel, grow the filesystem online."""
    table = read_table(runner, part.disk)
    plan = plan_grow(table, disk_size(part.disk), part.number)
    if plan.grow and plan.new_size is not None:
        start = next(p.start for p in table.partitions if p.number == part.number)
        if not backup.exists():
            dump = check(runner.run(["sfdisk", "--dump", str(part.disk)])).stdout
            write_file(backup, dump.encode(), 0o644)
        write_table(runner, part.disk, part.number, start, plan.new_size)
        check(runner.run(["partx", "--update", "--nr", str(part.number), str(part.disk)]))
    # Every time, not only after a table write: a cut after the table and before this line
    # leaves a filesystem smaller than its partition, and the next boot's plan says "fills".
    check(runner.run(["resize2fs", str(part.device)]))
    return GrowResult(plan, plan.grow)
