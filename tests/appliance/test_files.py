"""gateway.appliance.files against a real file system: what root's writes do to a name that a
less trusted user could have replaced (the steps run as root in folders the gateway can write)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.appliance.files import Owner, write_file

OTHER = Owner(4242, 4242)  # an owner no file here has yet


@pytest.fixture
def bait(tmp_path: Path) -> Path:
    """A file elsewhere, root's, 0600, holding what the step is about to write."""
    target = tmp_path / "elsewhere" / "shadow"
    target.parent.mkdir()
    target.write_bytes(b"same\n")
    target.chmod(0o600)
    return target


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_a_link_with_the_same_content_is_replaced_not_followed(tmp_path: Path, bait: Path) -> None:
    name = tmp_path / "state" / "serial"
    name.parent.mkdir()
    name.symlink_to(bait)
    assert write_file(name, b"same\n", 0o644, OTHER)  # written: the link is not the file
    st = bait.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600), "bait changed"
    assert not name.is_symlink() and name.read_bytes() == b"same\n"
    own = name.stat()
    assert (own.st_uid, own.st_gid, stat.S_IMODE(own.st_mode)) == (4242, 4242, 0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_a_file_that_already_holds_the_content_only_gets_its_owner_and_mode(
    tmp_path: Path,
) -> None:
    name = tmp_path / "serial"
    name.write_bytes(b"same\n")
    name.chmod(0o600)
    inode = name.stat().st_ino
    assert not write_file(name, b"same\n", 0o644, OTHER)
    st = name.stat()
    assert (st.st_ino, st.st_uid, stat.S_IMODE(st.st_mode)) == (inode, 4242, 0o644)


def test_a_fifo_under_the_name_does_not_hang_the_write(tmp_path: Path) -> None:
    name = tmp_path / "serial"
    os.mkfifo(name)
    assert write_file(name, b"x\n", 0o644)
    assert stat.S_ISREG(name.lstat().st_mode) and name.read_bytes() == b"x\n"


def test_a_socket_under_the_name_is_replaced_by_the_file(tmp_path: Path) -> None:
    import socket

    name = tmp_path / "firstboot-report.json"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(name))
        assert write_file(name, b"{}\n", 0o644)
    finally:
        listener.close()
    assert stat.S_ISREG(name.lstat().st_mode) and name.read_bytes() == b"{}\n"
