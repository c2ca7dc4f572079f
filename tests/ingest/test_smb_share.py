"""The box's SMB share (issue 12 item 4a), with a real smbd and smbclient as the device.

smbd runs on a loopback port picked at run time with the smb.conf the gateway renders
(tests/smbpeer.py); every Samba file is under the test's temporary folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.config import parse_config
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.remote.accounts import DeviceAccountError
from gateway.ingest.remote.smbconf import private_dir
from gateway.spool.durable import write_bytes_durably
from tests.harness import wait_until
from tests.ingest.support import Taker
from tests.smbpeer import OWNER, SambaServer, owner_ids, unix_accounts
from tests.systemd_sandbox import service_settings

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


# --- a share added in the panel reaches smbd without a restart (issue 12) ----------------------

SMB_UNIT = Path(__file__).resolve().parents[2] / "systemd/dicom-gateway-smb.service"
GATEWAY = "/opt/dicom-gateway/current/bin/dicom-gateway"
# Accounts of this test's own (the fixture's names may be in use by a test running beside it).
FIRST_DEVICE, NEW_DEVICE = "dgwtest-reload1", "dgwtest-reload2"


def _folders_toml(state: Path, shared: Path, folders: dict[str, str]) -> str:
    """gateway.toml with one shared drop folder per ``name: account``."""
    text = f'[gateway]\nstate_dir = "{state}"\n'
    for name, account in folders.items():
        text += (
            f'\n[[ingest.folder]]\nname = "{name}"\npath = "{shared / name}"\n'
            f'share = "{name}"\nshare_user = "{account}"\n'
        )
    return text


def _as_run_here(line: str, config: Path, prepared: Path, smbd_pid: int | None) -> list[str]:
    """One ExecReload= line of the share unit as this test runs it: our program through this
    interpreter, the box's gateway.toml and smb.conf mapped to the test's, $MAINPID to smbd's."""
    argv = shlex.split(line)
    if argv[0] == GATEWAY:
        argv = [sys.executable, "-m", "gateway", *argv[1:]]
        argv[argv.index("--config") + 1] = str(config)
        return [*argv, "--out", str(prepared), "--owner", OWNER]
    assert smbd_pid is not None, line
    return [str(smbd_pid) if word == "$MAINPID" else word for word in argv]


def _open_fifo_writer(fifo: Path, into: list[int]) -> bool:
    """Open ``fifo`` for writing if a reader has it open (non-blocking); the fd goes in ``into``."""
    try:
        into.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        return False
    return True


def _share_names(listing: subprocess.CompletedProcess[str]) -> set[str]:
    assert listing.returncode == 0, listing.stdout + listing.stderr
    return {line.split("|")[1] for line in listing.stdout.splitlines() if line.startswith("Disk|")}


def test_a_share_added_to_gateway_toml_is_served_after_the_units_reload(
    tmp_path: Path, shared: Path
) -> None:
    """The share unit's start for a box with one shared folder, smbd serving what it wrote; then
    the panel adds a second shared folder (gateway.toml replaced by rename) and the unit's
    ExecReload= lines run as systemd runs them: the new device's account is made, smb.conf has
    the share, and the same smbd (no restart) lists and serves it. Then the first folder is
    unshared while the second device uploads: the upload completes whole, the removed share is
    no longer offered."""
    config, prepared, state = tmp_path / "gateway.toml", tmp_path / "smb.conf", tmp_path / "state"
    for name in ("export", "other"):
        (shared / name).mkdir()
    config.write_text(_folders_toml(state, shared, {"export": FIRST_DEVICE}))
    with unix_accounts([]), contextlib.ExitStack() as cleanup:
        for name in (FIRST_DEVICE, NEW_DEVICE):
            # Made by share prepare below, as on the box (none left by an interrupted run).
            subprocess.run(["userdel", name], check=False, capture_output=True)
            cleanup.callback(subprocess.run, ["userdel", name], check=False, capture_output=True)
        uid, gid = owner_ids()
        for name in ("export", "other"):
            os.chown(shared / name, uid, gid)
            os.chmod(shared / name, 0o2770)
        # The unit's start: ExecStartPre= as systemd runs it.
        (start_line,) = service_settings(SMB_UNIT)["ExecStartPre"]
        first = subprocess.run(
            _as_run_here(start_line, config, prepared, smbd_pid=None),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert first.returncode == 0, first.stderr
        assert "[export]" in prepared.read_text() and "[other]" not in prepared.read_text()
        pwd.getpwnam(FIRST_DEVICE)
        with pytest.raises(KeyError):
            pwd.getpwnam(NEW_DEVICE)

        server = SambaServer(tmp_path / "samba", parse_config({}), private=private_dir(state))
        server.serve_prepared(prepared)
        server.accounts.set_password(FIRST_DEVICE, PASSWORD)
        server.start()
        cleanup.callback(server.stop)
        assert server.proc is not None
        smbd_pid = server.proc.pid
        assert _share_names(server.shares(FIRST_DEVICE, PASSWORD)) == {"export"}

        def apply(folders: dict[str, str]) -> None:
            """The panel's "Save and apply" (the file replaced by temporary file and rename),
            then the share unit's ExecReload= lines, in order, as systemd runs them."""
            text = _folders_toml(state, shared, folders)
            write_bytes_durably(config, text.encode(), 0o640)
            for line in service_settings(SMB_UNIT)["ExecReload"]:
                done = subprocess.run(
                    _as_run_here(line, config, prepared, smbd_pid),
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert done.returncode == 0, (line, done.stdout + done.stderr)

        apply({"export": FIRST_DEVICE, "other": NEW_DEVICE})
        text = prepared.read_text()
        assert "[other]" in text and f"valid users = {NEW_DEVICE}" in text
        pwd.getpwnam(NEW_DEVICE)  # made by the reload: the panel can now set its password
        server.accounts.set_password(NEW_DEVICE, OTHER_PASSWORD)
        assert wait_until(
            lambda: "other" in _share_names(server.shares(FIRST_DEVICE, PASSWORD)), 20
        ), server.log()
        own = server.client("other", NEW_DEVICE, OTHER_PASSWORD, "ls")
        assert own.returncode == 0, own.stdout + own.stderr
        assert server.client("export", FIRST_DEVICE, PASSWORD, "ls").returncode == 0

        # A device uploading to "other" while "export" is unshared: the reload does not cut it.
        fifo = tmp_path / "device-file"
        os.mkfifo(fifo)
        head, tail = bytes(17 * 1024 * 1024), bytes(range(256)) * 4096
        result: list[subprocess.CompletedProcess[str]] = []
        put = threading.Thread(
            target=lambda: result.append(
                server.client("other", NEW_DEVICE, OTHER_PASSWORD, f'put "{fifo}" upload.bin')
            )
        )
        put.start()
        landed = shared / "other" / "upload.bin"
        try:
            # Opened only once smbclient reads it (ENXIO before): a client that fails to connect
            # fails the test instead of hanging it.
            writer: list[int] = []
            assert wait_until(lambda: _open_fifo_writer(fifo, writer), 30), result
            os.set_blocking(writer[0], True)
            with os.fdopen(writer[0], "wb") as device:
                device.write(head)
                device.flush()
                assert wait_until(
                    lambda: landed.exists() and landed.stat().st_size >= 16 * 1024 * 1024, 30
                ), server.log()
                apply({"other": NEW_DEVICE})
                device.write(tail)
        finally:
            put.join(60)
        assert result and result[0].returncode == 0, result
        assert landed.read_bytes() == head + tail
        assert "[export]" not in prepared.read_text()
        assert wait_until(
            lambda: _share_names(server.shares(NEW_DEVICE, OTHER_PASSWORD)) == {"other"}, 20
        ), server.log()
        gone = server.client("export", FIRST_DEVICE, PASSWORD, "ls")
        assert "NT_STATUS_BAD_NETWORK_NAME" in gone.stdout + gone.stderr, gone
        assert server.proc is not None and server.proc.pid == smbd_pid
        assert server.proc.poll() is None  # reloaded, not restarted
