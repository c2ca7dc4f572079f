"""The box's SMB share (issue 12 item 4a), with a real smbd and smbclient as the device.

smbd runs on a loopback port picked at run time with the smb.conf the gateway renders
(tests/smbpeer.py); every Samba file is under the test's temporary folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.remote.accounts import DeviceAccountError
from tests.harness import wait_until
from tests.ingest.support import Taker
from tests.smbpeer import SambaServer, owner_ids, unix_accounts

pytestmark = pytest.mark.peers

DEVICE, OTHER = "dgwtest-mod1", "dgwtest-mod2"
PASSWORD, OTHER_PASSWORD = "Ultrasound room three", "Another device entirely"
JPEG = next(iter(sorted(Path("/usr/share").rglob("*.jpg"))), None)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """The folders the shares serve: smbd works in them as the (forced) gateway user, who
    must be able to reach them; pytest's own temporary folders are root's alone (0700)."""
    root = Path(tempfile.mkdtemp(prefix="dgw-smb-"))
    os.chmod(root, 0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def samba(tmp_path: Path, shared: Path) -> Iterator[SambaServer]:
    for name in ("export", "other"):
        (shared / name).mkdir()
    config = parse_config(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "ingest": {
                "folder": [
                    {
                        "name": "export",
                        "path": str(shared / "export"),
                        "share": "export",
                        "share_user": DEVICE,
                        "settle_seconds": 0.2,
                        "poll_seconds": 0.1,
                    },
                    {
                        "name": "other",
                        "path": str(shared / "other"),
                        "share": "other",
                        "share_user": OTHER,
                    },
                ]
            },
        }
    )
    with unix_accounts([DEVICE, OTHER]):
        server = SambaServer(tmp_path / "samba", config)
        uid, gid = owner_ids()
        for name in ("export", "other"):
            os.chown(shared / name, uid, gid)
            os.chmod(shared / name, 0o2770)
        server.accounts.set_password(DEVICE, PASSWORD)
        server.accounts.set_password(OTHER, OTHER_PASSWORD)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _jpeg() -> Path:
    if JPEG is None:
        pytest.skip("no JPEG under /usr/share on this machine")
    return JPEG


def test_the_device_account_puts_a_file_owned_by_the_gateway_with_the_folder_mode(
    samba: SambaServer, shared: Path
) -> None:
    jpeg = _jpeg()
    done = samba.client("export", DEVICE, PASSWORD, f'put "{jpeg}" P1_DOE^JANE_1.jpg')
    assert done.returncode == 0, done.stdout + done.stderr
    landed = shared / "export" / "P1_DOE^JANE_1.jpg"
    assert landed.read_bytes() == jpeg.read_bytes()
    st = landed.stat()
    assert (st.st_uid, st.st_gid) == owner_ids()  # force user / force group
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_a_wrong_password_guest_and_anonymous_are_refused(samba: SambaServer) -> None:
    for user, password in ((DEVICE, "not the password"), ("guest", ""), ("nobody", "")):
        refused = samba.client("export", user, password, "ls")
        assert refused.returncode != 0
        assert "NT_STATUS_LOGON_FAILURE" in refused.stdout + refused.stderr, refused
    anonymous = samba.client("export", None, "", "ls")  # smbclient -N: a null session
    assert anonymous.returncode != 0
    assert "NT_STATUS_ACCESS_DENIED" in anonymous.stdout + anonymous.stderr, anonymous


def test_smb1_is_refused_by_the_server(samba: SambaServer) -> None:
    nt1 = samba.client("export", DEVICE, PASSWORD, "ls", protocol="NT1")
    assert nt1.returncode != 0
    # The client offered NT1 (its own floor lowered); the server chose none of it.
    assert "protocol negotiation failed" in nt1.stdout + nt1.stderr, nt1
    smb2 = samba.client("export", DEVICE, PASSWORD, "ls", protocol="SMB2")
    assert smb2.returncode == 0, smb2.stdout + smb2.stderr


def test_another_device_account_cannot_reach_this_share(samba: SambaServer) -> None:
    other = samba.client("export", OTHER, OTHER_PASSWORD, "ls")
    assert other.returncode != 0
    assert "NT_STATUS_ACCESS_DENIED" in other.stdout + other.stderr, other
    own = samba.client("other", OTHER, OTHER_PASSWORD, "ls")
    assert own.returncode == 0, own.stdout + own.stderr


def test_a_replaced_password_works_and_the_old_one_no_longer_does(samba: SambaServer) -> None:
    samba.accounts.set_password(DEVICE, "A brand new passphrase")
    assert samba.client("export", DEVICE, "A brand new passphrase", "ls").returncode == 0
    assert samba.client("export", DEVICE, PASSWORD, "ls").returncode != 0
    assert DEVICE in samba.accounts.accounts()


def test_a_password_for_an_account_the_box_has_not_made_says_so(samba: SambaServer) -> None:
    with pytest.raises(DeviceAccountError, match="does not exist on the box yet"):
        samba.accounts.set_password("dgwtest-nobody-here", PASSWORD)


def test_a_file_written_in_pieces_over_smb_is_taken_only_whole(
    samba: SambaServer, shared: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """smbclient reads the device's file from a pipe: the first 17 MiB reach the share (smbclient
    sends 16 MiB at a time) and then the device pauses, its file open, for 1 s: five times the
    settle time. The watcher (inotify) must not take the partial file; it takes the whole one
    after the close."""
    folder = shared / "export"
    taker = Taker()
    config = parse_config(
        {
            "ingest": {
                "folder": [
                    {
                        "name": "export",
                        "path": str(folder),
                        "settle_seconds": 0.2,
                        "poll_seconds": 0.1,
                    }
                ]
            }
        }
    ).ingest.folder[0]
    watcher = FolderWatcher(config, taker, SystemClock(), logging.getLogger("test.smb"))
    caplog.set_level(logging.INFO, logger="test.smb")
    watcher.start()
    # The watch must be on before the device writes: start() returns before the watcher thread
    # has set up inotify, and writes made before it are unseen, so the file would be judged by
    # the rescan rule alone and taken half-written during the pause (the flaky run).
    assert wait_until(
        lambda: any(r.getMessage() == "watching with inotify" for r in caplog.records), 5.0
    )
    fifo = tmp_path / "device-file"
    os.mkfifo(fifo)
    head = _jpeg().read_bytes() + bytes(17 * 1024 * 1024)
    tail = bytes(range(256)) * 4096
    result: list[subprocess.CompletedProcess[str]] = []
    put = threading.Thread(
        target=lambda: result.append(
            samba.client("export", DEVICE, PASSWORD, f'put "{fifo}" P2_DOE^JOHN_1.jpg')
        )
    )
    try:
        put.start()
        with fifo.open("wb") as device:
            device.write(head)
            device.flush()
            landed = folder / "P2_DOE^JOHN_1.jpg"
            assert wait_until(
                lambda: landed.exists() and landed.stat().st_size >= 16 * 1024 * 1024, 30
            ), samba.log()
            partial = landed.stat().st_size
            assert partial < len(head) + len(tail)
            # The device pauses with its file open: nothing may be taken meanwhile.
            assert not wait_until(lambda: bool(taker.calls), 1.0)
            device.write(tail)
        put.join(60)
        assert result and result[0].returncode == 0, result
        assert wait_until(lambda: bool(taker.taken), 10)
        assert taker.taken == {landed: head + tail}
        assert len(taker.calls) == 1
    finally:
        watcher.stop()
