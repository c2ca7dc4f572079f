"""The qemu variant of the appliance image, booted as a box under qemu-system-aarch64 (TCG).

Rules (docs/image.md, "Booting the qemu image"):

- The image under test is never written: each test works on a sparse copy (``cp
  --sparse=always``), so a power cut (``kill -9`` of qemu) hits the copy exactly as a pulled
  plug hits a card, and the next boot reads what reached the "card" and nothing more.
- The kernel and initrd are read off the copy's FAT partition with mtools, as is the kernel
  command line (``cmdline.txt``): the test boots what the image carries, not a host kernel.
- Networking is qemu's user mode with ``restrict=on``: the box reaches nothing beyond this
  machine's loopback (no NTP, no archive: as a hospital network without them). The host reaches
  the box only through ``hostfwd`` ports on 127.0.0.1, picked at run time; the box reaches a
  host service only where ``guest_forwards`` says: a connection to ``GUEST_HOST:<port>``
  starts one ``socat`` to 127.0.0.1:<host port> (qemu's ``guestfwd`` with a command runs it per
  connection, so associations can come one after the other).
- The serial console goes to a file; conditions on it are waited for, never slept on, and
  every wait is bounded (``wait_console``). qemu itself runs under ``timeout`` as a last fence.
- The FAT partition is read and written with mtools at the offset the partition table says
  (``sfdisk -J``), never mounted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import wait_until
from tests.peers import free_port, require_tool

SECTOR = 512
# Ports inside the box: the panel (gateway.toml's [web] default), SSH, SMB.
GUEST_PORTS = {"panel": 8443, "ssh": 22, "smb": 445}
GUEST_HOST = "10.0.2.100"  # where the box finds the host's services (guest_forwards)
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Partition:
    """One partition of the image file: where it starts and how long it is, in bytes."""

    number: int
    offset: int
    size: int


def partitions(image: Path) -> list[Partition]:
    """The image's partition table as sfdisk reads it."""
    dump = subprocess.run(
        ["sfdisk", "-J", str(image)], capture_output=True, text=True, check=True, timeout=30
    )
    table = json.loads(dump.stdout)["partitiontable"]
    return [
        Partition(i, int(p["start"]) * SECTOR, int(p["size"]) * SECTOR)
        for i, p in enumerate(table["partitions"], 1)
    ]


@dataclass(frozen=True)
class Fat:
    """The FAT partition of an image file, through mtools (``-i image@@offset``)."""

    image: Path
    offset: int

    @property
    def _target(self) -> str:
        return f"{self.image}@@{self.offset}"

    def read(self, name: str) -> bytes | None:
        """A file's bytes, or None when the card does not hold it."""
        done = subprocess.run(
            ["mtype", "-i", self._target, f"::/{name}"], capture_output=True, timeout=30
        )
        return done.stdout if done.returncode == 0 else None

    def names(self) -> list[str]:
        """The names in the partition's top folder."""
        done = subprocess.run(
            ["mdir", "-b", "-i", self._target, "::/"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return [line.rsplit("/", 1)[-1] for line in done.stdout.split()]

    def write(self, name: str, data: bytes, scratch: Path) -> None:
        """Put a file on the card (folders made as needed), as a laptop would."""
        parts = name.split("/")
        for depth in range(1, len(parts)):
            folder = "::/" + "/".join(parts[:depth])
            subprocess.run(["mmd", "-D", "s", "-i", self._target, folder], capture_output=True)
        source = scratch / parts[-1]
        source.write_bytes(data)
        subprocess.run(
            ["mcopy", "-o", "-i", self._target, str(source), f"::/{name}"],
            check=True,
            timeout=30,
        )

    def extract(self, name: str, dest: Path) -> Path:
        """Copy a file off the card to ``dest``."""
        subprocess.run(
            ["mcopy", "-o", "-i", self._target, f"::/{name}", str(dest)], check=True, timeout=60
        )
        return dest


def fat_of(image: Path) -> Fat:
    """The image's first partition (DGBOOT) as a :class:`Fat`."""
    return Fat(image, partitions(image)[0].offset)


@dataclass
class Box:
    """One qemu-system-aarch64 run of a disk image: start, wait on its console, cut or stop.

    ``ports`` maps GUEST_PORTS' names to the 127.0.0.1 ports forwarded to them; they are picked
    once, so a reboot of the same Box keeps them.
    """

    disk: Path
    workdir: Path
    memory_mib: int = 1024
    cpus: int = 2
    limit_seconds: int = 3600
    ports: dict[str, int] = field(default_factory=dict)
    # GUEST_HOST's port in the box -> this machine's 127.0.0.1 port (a PACS, a RIS).
    guest_forwards: dict[int, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    started_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = {name: free_port() for name in GUEST_PORTS}

    @property
    def console(self) -> Path:
        """This boot's serial console (one file per boot: console-1.log, console-2.log...)."""
        return self.workdir / f"console-{self.boots}.log"

    def console_text(self) -> str:
        """This boot's console so far, without systemd's colour codes."""
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return ANSI_RE.sub("", text)

    def start(self) -> Box:
        """Boot the disk with the kernel, initrd and command line its FAT carries."""
        qemu = require_tool("qemu-system-aarch64")
        fat = fat_of(self.disk)
        kernel = fat.extract("vmlinuz", self.workdir / "vmlinuz")
        initrd = fat.extract("initrd.img", self.workdir / "initrd.img")
        cmdline = (fat.read("cmdline.txt") or b"").decode().strip()
        assert "root=LABEL=rootA" in cmdline and " ro" in f" {cmdline}", cmdline
        socat = require_tool("socat")
        forwards = ",".join(
            [
                "restrict=on",
                *(
                    f"hostfwd=tcp:127.0.0.1:{self.ports[name]}-:{port}"
                    for name, port in GUEST_PORTS.items()
                ),
                *(
                    f"guestfwd=tcp:{GUEST_HOST}:{inside}-cmd:{socat} STDIO TCP:127.0.0.1:{host}"
                    for inside, host in self.guest_forwards.items()
                ),
            ]
        )
        self.boots += 1
        argv = [
            "timeout", "-s", "KILL", str(self.limit_seconds),
            qemu, "-M", "virt", "-cpu", "cortex-a72", "-accel", "tcg",
            "-smp", str(self.cpus), "-m", str(self.memory_mib),
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
            "-drive", f"file={self.disk},format=raw,if=virtio,cache=writeback",
            "-netdev", f"user,id=net0,{forwards}",
            "-device", "virtio-net-pci,netdev=net0",
            # The box makes keys and tokens at first boot: give its kernel real entropy.
            "-device", "virtio-rng-pci",
            "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.console}",
        ]  # fmt: skip
        log = (self.workdir / f"qemu-{self.boots}.log").open("wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def wait_console(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """The first match of ``pattern`` on this boot's console, waiting at most ``timeout``."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                return True  # qemu is gone: stop waiting, the caller sees no match
            match = regex.search(self.console_text())
            if match:
                found.append(match)
            return bool(match)

        wait_until(seen, timeout, interval=1.0)
        return found[0] if found else None

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL to qemu (through timeout's child), nothing flushed."""
        if self.proc is None:
            return
        for child in _children(self.proc.pid):
            child_kill(child)
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """End the run, whatever state the box is in (tests' teardown)."""
        self.power_cut()


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def child_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def sparse_copy(image: Path, dest: Path) -> Path:
    """A copy of the image that the box may write (holes kept: seconds, not a 3 GiB write)."""
    subprocess.run(["cp", "--sparse=always", str(image), str(dest)], check=True, timeout=600)
    return dest


def have(*programs: str) -> bool:
    return all(shutil.which(p) for p in programs)
