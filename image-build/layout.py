"""The SD card's partition table: one table, the offsets derived from it, checked and pure.

Rules (docs/image.md, /work APPLIANCE contract):

- An MBR ("dos") table: the Raspberry Pi 4's boot ROM reads MBR, not GPT.
- Every partition starts on a 4 MiB boundary and its size is a multiple of 4 MiB (flash erase
  blocks are 4 MiB or a divisor of it; a file system that straddles them costs a read-modify-
  write of two blocks per write). The first starts at 4 MiB, leaving the table its own block.
- Partition 1 ``DGBOOT`` FAT32 (the Pi's firmware reads it; the field engineer edits it), 2
  ``rootA`` ext4 read-only, 3 ``rootB`` the same size, unformatted (the OS-update issue's second
  slot), 4 ``dgdata`` ext4, grown to fill the card at first boot, hence last.
- Identifiers (disk id, FAT volume id, ext4 UUIDs and hash seeds) are derived from the version
  and variant, so a rebuild of the same release is the same image.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

MIB = 1024 * 1024
ALIGN = 4 * MIB
SECTOR = 512
# A namespace of our own for uuid5; any fixed value does, this one is uuid5(DNS, "dicom-gateway").
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "dicom-gateway")


@dataclass(frozen=True)
class PartitionSpec:
    """One row of the table as written: what, how big, which MBR type."""

    label: str
    fs: str  # "vfat", "ext4" or "none" (left zeroed)
    size_mib: int
    mbr_type: str  # sfdisk's hex type: c = FAT32 LBA, 83 = Linux
    bootable: bool = False


TABLE: tuple[PartitionSpec, ...] = (
    PartitionSpec("DGBOOT", "vfat", 256, "c", bootable=True),
    PartitionSpec("rootA", "ext4", 1536, "83"),
    PartitionSpec("rootB", "none", 1536, "83"),
    PartitionSpec("dgdata", "ext4", 256, "83"),
)


@dataclass(frozen=True)
class Partition:
    """A partition placed on the disk: byte offset and size, both multiples of ALIGN."""

    number: int
    spec: PartitionSpec
    offset: int
    size: int

    @property
    def start_sector(self) -> int:
        return self.offset // SECTOR

    @property
    def sectors(self) -> int:
        return self.size // SECTOR


class LayoutError(ValueError):
    """The table breaks a rule above; the message names the partition."""


def plan(table: tuple[PartitionSpec, ...] = TABLE, first_offset: int = ALIGN) -> list[Partition]:
    """Place ``table`` on the disk back to back from ``first_offset``; refuse misalignment."""
    if len(table) > 4:
        raise LayoutError(f"{len(table)} partitions: an MBR holds 4 primary partitions")
    if first_offset % ALIGN or first_offset < ALIGN:
        raise LayoutError(f"first partition at {first_offset}: must be a 4 MiB multiple >= 4 MiB")
    placed = []
    offset = first_offset
    for number, spec in enumerate(table, start=1):
        size = spec.size_mib * MIB
        if size <= 0 or size % ALIGN:
            raise LayoutError(f"{spec.label}: {spec.size_mib} MiB is not a multiple of 4 MiB")
        placed.append(Partition(number, spec, offset, size))
        offset += size
    return placed


def disk_size(parts: list[Partition]) -> int:
    """Bytes of the image: up to the end of the last partition."""
    return parts[-1].offset + parts[-1].size


def sfdisk_script(parts: list[Partition], disk_id: str) -> str:
    """The input of ``sfdisk`` for this table (sectors, so nothing is rounded by sfdisk)."""
    lines = ["label: dos", f"label-id: 0x{disk_id}", "unit: sectors", ""]
    for part in parts:
        boot = ", bootable" if part.spec.bootable else ""
        lines.append(
            f"start={part.start_sector}, size={part.sectors}, type={part.spec.mbr_type}{boot}"
        )
    return "\n".join(lines) + "\n"


def _digest(version: str, variant: str, what: str) -> bytes:
    return hashlib.sha256(f"dicom-gateway/{version}/{variant}/{what}".encode()).digest()


def disk_id(version: str, variant: str) -> str:
    """The MBR disk identifier (8 hex digits)."""
    return _digest(version, variant, "mbr").hex()[:8]


def fat_volume_id(version: str, variant: str) -> str:
    """The FAT volume id (8 hex digits, mkfs.vfat -i)."""
    return _digest(version, variant, "DGBOOT").hex()[:8]


def fs_uuid(version: str, variant: str, label: str) -> str:
    """An ext4 UUID (also its directory hash seed) for ``label``."""
    return str(uuid.uuid5(NAMESPACE, f"{version}/{variant}/{label}"))
