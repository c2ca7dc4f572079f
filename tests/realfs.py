"""Real small file systems for the storage-fault tests: a tmpfs, a loop-mounted ext4, a bind,
and a mount the mount table calls a network file system.

Mounting needs root. Without it (or when the kernel refuses the mount) the test is skipped
with the reason; with REQUIRE_PEERS=1 (CI, as for the DICOM peers in tests/peers.py) it fails
instead, so a CI machine that silently lost the ability cannot pass these tests by skipping.
Everything mounted is unmounted when the test ends, lazily if a process still holds it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

_MS_NOSUID_NODEV = 0x2 | 0x4
_FUSE_GETATTR, _FUSE_INIT = 3, 26


def _unavailable(message: str) -> None:
    if os.environ.get("REQUIRE_PEERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)


def _mount(args: list[str], target: Path) -> None:
    if os.geteuid() != 0:
        _unavailable("mounting a test file system needs root")
    if shutil.which("mount") is None:
        _unavailable("mount(8) is not installed")
    target.mkdir(parents=True, exist_ok=True)
    done = _run("mount", *args, str(target))
    if done.returncode != 0:
        _unavailable(f"cannot mount a test file system: {done.stderr.strip()}")


def _unmount(target: Path) -> None:
    if _run("umount", str(target)).returncode != 0:
        _run("umount", "-l", str(target))  # a child still holds it: detach now, free later


@contextlib.contextmanager
def tmpfs(target: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted on ``target``."""
    _mount(["-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs"], target)
    try:
        yield target
    finally:
        _unmount(target)


@contextlib.contextmanager
def bind(source: Path, target: Path) -> Iterator[Path]:
    """``source`` bind-mounted on ``target``: a mount point on the same file system (st_dev)."""
    _mount(["--bind", str(source)], target)
    try:
        yield target
    finally:
        _unmount(target)


@contextlib.contextmanager
def network_lookalike(target: Path) -> Iterator[Path]:
    """A mount on ``target`` that /proc/self/mountinfo lists as a network file system
    (``fuse.sshfs``): an empty directory served by a thread of this process over /dev/fuse,
    which answers INIT and GETATTR and refuses every other request (ENOSYS)."""
    if os.geteuid() != 0 or not Path("/dev/fuse").exists():
        _unavailable("a FUSE mount needs root and /dev/fuse")
    target.mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"sshfs", str(target).encode(), b"fuse.sshfs", _MS_NOSUID_NODEV, options):
        os.close(fd)
        _unavailable(f"cannot make a FUSE mount: {os.strerror(ctypes.get_errno())}")
    server = threading.Thread(target=_serve_fuse, args=(fd,), daemon=True)
    server.start()
    try:
        yield target
    finally:
        _unmount(target)  # the kernel ends the session: the server's read fails, it returns
        server.join(timeout=10)
        os.close(fd)


def _serve_fuse(fd: int) -> None:
    """The least of the FUSE protocol (linux/fuse.h) for an empty root directory."""
    header = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
    while True:
        try:
            request = os.read(fd, 1 << 17)
        except OSError:
            return  # unmounted (ENODEV)
        _, opcode, unique, *_ = header.unpack_from(request)
        if opcode == _FUSE_INIT:  # protocol 7.31; no optional features
            body = struct.pack("<IIIIHHIIHHI7I", 7, 31, 0, 0, 1, 1, 4096, 1, 1, 0, 0, *[0] * 7)
        elif opcode == _FUSE_GETATTR:  # valid 1 s; inode 1, a 0755 directory of root's
            attr = struct.pack("<6Q10I", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
            body = struct.pack("<QII", 1, 0, 0) + attr
        else:
            os.write(fd, struct.pack("<IiQ", 16, -errno.ENOSYS, unique))
            continue
        os.write(fd, struct.pack("<IiQ", 16 + len(body), 0, unique) + body)


@contextlib.contextmanager
def ext4(target: Path, size_bytes: int, reserved_percent: int = 0) -> Iterator[Path]:
    """An ext4 image of ``size_bytes`` loop-mounted on ``target`` with errors=remount-ro;
    ``reserved_percent`` of its blocks kept for root (mkfs.ext4 -m; Debian's default is 5)."""
    if shutil.which("mkfs.ext4") is None:
        _unavailable("mkfs.ext4 is not installed (Debian: e2fsprogs)")
    image = target.with_name(f"{target.name}.img")
    with image.open("wb") as f:
        f.truncate(size_bytes)
    made = _run("mkfs.ext4", "-q", "-F", "-m", str(reserved_percent), str(image))
    if made.returncode != 0:
        _unavailable(f"mkfs.ext4 failed: {made.stderr.strip()}")
    _mount(["-o", "loop,errors=remount-ro", str(image)], target)
    try:
        yield target
    finally:
        _unmount(target)
        image.unlink(missing_ok=True)


def remount(target: Path, mode: str) -> None:
    """``mount -o remount,MODE`` (ro or rw); fails the test when the kernel refuses."""
    done = _run("mount", "-o", f"remount,{mode}", str(target))
    assert done.returncode == 0, f"remount,{mode} of {target}: {done.stderr.strip()}"


def free_bytes(path: Path) -> int:
    """What an unprivileged writer may still use on ``path``'s file system."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Write ``path`` until its file system has at most ``leave`` bytes free; returns it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\xa5" * 65536
        while (room := free_bytes(path.parent) - leave) > 0:
            try:
                os.write(fd, block[: min(room, len(block))])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def trigger_error(target: Path) -> None:
    """Make ext4 report an error on ``target``'s file system, as a failing card would: with
    errors=remount-ro the kernel turns it read-only (until an fsck and a fresh mount)."""
    source = _run("findmnt", "-n", "-o", "SOURCE", str(target)).stdout.strip()
    knob = Path("/sys/fs/ext4") / Path(source).name / "trigger_fs_error"
    if not knob.exists():
        _unavailable(f"this kernel has no {knob}")
    knob.write_text("test: simulated file system error\n")
