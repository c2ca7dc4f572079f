"""The box's FTP receiver (issue 12 item 4, FTP), with real clients: Python's ftplib and curl.

The receiver runs as the daemon runs it (listen, then the serve loop in a thread) on loopback
ports picked at run time, with a certificate from a test CA; uploads land in a real folder that
a real FolderWatcher (inotify) watches, so "taken" means what intake would have been given.
"""

from __future__ import annotations

import ftplib
import io
import logging
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from gateway.clock import SystemClock
from gateway.config import FtpSection
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.remote.ftp import FtpReceiver, ftps_context, peer_gone, upload_outcome
from gateway.ingest.remote.ftpaccounts import FtpAccounts
from gateway.ingest.remote.ftptls import DataEnd
from tests.conftest import Pki
from tests.harness import wait_until
from tests.ingest.support import Taker, folder_config
from tests.peers import free_port, require_tool

LOG = logging.getLogger("test.ftp")
DEVICE, PASSWORD = "mod1ftp", "Ultrasound room three"
NO_PASSWORD_YET = "mod2ftp"
JPEG = next(iter(sorted(Path("/usr/share").rglob("*.jpg"))), None)
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _jpeg() -> bytes:
    if JPEG is None:
        pytest.skip("no JPEG under /usr/share on this machine")
    return JPEG.read_bytes()


@dataclass
class Box:
    """A running receiver, its folder, the watcher on it, and how to reach it."""

    receiver: FtpReceiver
    folder: Path
    taker: Taker
    port: int
    passive: tuple[int, int]
    trust: ssl.SSLContext
    ca: Path

    def client(self, *, tls: bool = True) -> ftplib.FTP:
        """A connected client (FTPS explicit unless ``tls`` is False), not logged in."""
        ftp: ftplib.FTP = ftplib.FTP_TLS(context=self.trust) if tls else ftplib.FTP()
        ftp.connect("127.0.0.1", self.port, timeout=20)
        return ftp

    def login(self) -> ftplib.FTP_TLS:
        ftp = self.client()
        assert isinstance(ftp, ftplib.FTP_TLS)
        ftp.login(DEVICE, PASSWORD)
        ftp.prot_p()
        return ftp

    def visible(self) -> list[str]:
        """What the watcher could take: the folder's names, the hidden staging folder aside."""
        return sorted(p.name for p in self.folder.iterdir() if not p.name.startswith("."))

    def staged(self) -> list[Path]:
        return sorted((self.folder / ".ftp-incoming").glob("*"))


MakeBox = Callable[..., Box]


@pytest.fixture
def make_box(tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture) -> Iterator[MakeBox]:
    caplog.set_level(logging.INFO, logger=LOG.name)
    stops: list[Callable[[], None]] = []

    def make(**settings: Any) -> Box:
        folder = tmp_path / "export"
        folder.mkdir(exist_ok=True)
        accounts = FtpAccounts(tmp_path / "state" / "ftp", FAST_HASHER)
        accounts.set_password(DEVICE, PASSWORD)
        port, passive = free_port(), free_port()
        values: dict[str, Any] = {
            "bind": "127.0.0.1",
            "port": port,
            "passive_ports": (passive, passive),
            **settings,
        }
        receiver = FtpReceiver(
            FtpSection.model_validate(values),
            {DEVICE: folder, NO_PASSWORD_YET: folder},
            accounts,
            LOG,
            refusal_delay=0.1,
        )
        receiver.listen(ftps_context(pki.gateway.cert, pki.gateway.key))
        stop = threading.Event()
        thread = threading.Thread(target=receiver.serve, args=(stop,), name="test-ftp")
        thread.start()
        taker = Taker()
        watcher = FolderWatcher(
            folder_config(folder, settle_seconds=0.2, poll_seconds=0.1, use_inotify=True),
            taker,
            SystemClock(),
            LOG,
        )
        watcher.start()
        assert wait_until(lambda: _logged(caplog, "watching with inotify"), 5.0)

        def stop_all() -> None:
            watcher.stop()
            stop.set()
            thread.join(10)
            receiver.close()

        stops.append(stop_all)
        trust = ssl.create_default_context(cafile=str(pki.ca))
        return Box(receiver, folder, taker, port, (passive, passive), trust, pki.ca)

    yield make
    for stop_all in stops:
        stop_all()


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> bool:
    return any(r.getMessage() == message for r in caplog.records)


# -- the rule ----------------------------------------------------------------------------------


def test_the_upload_rule() -> None:
    assert upload_outcome(finished=True, data_end=DataEnd.ORDERLY, control_open=True).complete
    for finished, end, control in (
        (False, DataEnd.ORDERLY, True),  # ABOR, timeout, write error
        (True, DataEnd.BROKEN, True),  # a reset: pyftpdlib itself calls that finished
        (True, DataEnd.RAGGED, True),  # TLS without close_notify: cut, reset or forged FIN
        (True, DataEnd.ORDERLY, False),  # the device died: both connections ended
    ):
        outcome = upload_outcome(finished=finished, data_end=end, control_open=control)
        assert not outcome.complete and outcome.reason


def test_peer_gone_tells_a_closed_or_reset_control_connection_from_a_live_one() -> None:
    """The tell of plain FTP when a device dies and its data connection's end is seen first
    (the integration tests cannot order the two ends: the kernel closes both at once)."""
    for ending in ("open", "pending command", "fin", "reset"):
        with socket.create_server(("127.0.0.1", 0)) as server:
            device = socket.create_connection(server.getsockname())
            box, _ = server.accept()
            with box:
                if ending == "pending command":
                    device.sendall(b"QUIT\r\n")
                elif ending == "reset":
                    device.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                if ending in ("fin", "reset"):
                    device.close()
                gone = wait_until(lambda box=box: peer_gone(box), 0.5)
                assert gone is (ending in ("fin", "reset")), ending
                if ending == "pending command":
                    assert box.recv(100) == b"QUIT\r\n"  # peeked, not consumed
            device.close()


def test_passive_ports_are_checked() -> None:
    with pytest.raises(ValueError, match="passive_ports"):
        FtpSection.model_validate({"passive_ports": (1000, 1010)})
    with pytest.raises(ValueError, match="more than"):
        FtpSection.model_validate({"passive_ports": (30000, 40000)})
    with pytest.raises(ValueError, match="inside"):
        FtpSection.model_validate({"port": 30005, "passive_ports": (30000, 30010)})


# -- whole uploads -----------------------------------------------------------------------------


def test_an_ftps_upload_arrives_whole_and_is_taken_once(make_box: MakeBox) -> None:
    box = make_box()
    jpeg = _jpeg()
    ftp = box.login()
    assert isinstance(ftp.sock, ssl.SSLSocket)
    assert ftp.storbinary("STOR P1_DOE^JANE_1.jpg", io.BytesIO(jpeg)).startswith("226")
    ftp.quit()
    landed = box.folder / "P1_DOE^JANE_1.jpg"
    assert wait_until(lambda: bool(box.taker.taken), 10)
    assert box.taker.taken == {landed: jpeg}
    assert box.staged() == []
    assert box.receiver.stats["received"] == 1


def test_curl_uploads_over_ftps_with_the_box_certificate(make_box: MakeBox) -> None:
    curl = require_tool("curl")
    box = make_box()
    jpeg = _jpeg()
    done = subprocess.run(
        [
            curl,
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--cacert",
            str(box.ca),
            "--user",
            f"{DEVICE}:{PASSWORD}",
            "--upload-file",
            str(JPEG),
            f"ftp://127.0.0.1:{box.port}/from-curl.jpg",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: bool(box.taker.taken), 10)
    assert box.taker.taken == {box.folder / "from-curl.jpg": jpeg}


def test_the_passive_port_is_the_configured_one_and_no_other(make_box: MakeBox) -> None:
    box = make_box()
    ftp = box.login()
    _, port = ftplib.parse227(ftp.sendcmd("PASV"))
    assert port == box.passive[0]
    ftp.sendcmd("ABOR")
    # Something else takes the one passive port: pyftpdlib would fall back to a port of the
    # kernel's choosing, outside the range a firewall was opened for. The receiver refuses.
    blocker = socket.create_server(("127.0.0.1", box.passive[0]))
    try:
        with pytest.raises(ftplib.error_temp, match="425"):
            ftp.sendcmd("PASV")
    finally:
        blocker.close()
    ftp.close()


# -- refusals ----------------------------------------------------------------------------------


def test_a_wrong_password_an_unknown_account_and_anonymous_are_refused(make_box: MakeBox) -> None:
    box = make_box()
    for user, password in (
        (DEVICE, "not the password"),
        ("nobody-here", PASSWORD),
        ("anonymous", "guest@example.org"),
        (NO_PASSWORD_YET, ""),
        (NO_PASSWORD_YET, PASSWORD),
    ):
        ftp = box.client()
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp.login(user, password)
        ftp.close()
    assert wait_until(lambda: box.receiver.stats["refused_logins"] == 5, 5)


def test_plain_ftp_is_refused_unless_opted_in(make_box: MakeBox) -> None:
    box = make_box()
    plain = box.client(tls=False)
    with pytest.raises(ftplib.error_perm, match="TLS is required"):
        plain.login(DEVICE, PASSWORD)
    plain.close()
    # Logged in over TLS, but asking for a clear data connection.
    ftp = box.client()
    assert isinstance(ftp, ftplib.FTP_TLS)
    ftp.login(DEVICE, PASSWORD)
    with pytest.raises(ftplib.error_perm, match="530"):
        ftp.storbinary("STOR clear.jpg", io.BytesIO(b"x" * 100))
    ftp.sendcmd("PBSZ 0")
    with pytest.raises(ftplib.error_perm, match="536"):
        ftp.sendcmd("PROT C")
    ftp.close()
    assert box.visible() == []


def test_with_allow_plain_a_plain_upload_is_taken(make_box: MakeBox) -> None:
    box = make_box(allow_plain=True)
    jpeg = _jpeg()
    ftp = box.client(tls=False)
    ftp.login(DEVICE, PASSWORD)
    assert ftp.storbinary("STOR plain.jpg", io.BytesIO(jpeg)).startswith("226")
    ftp.quit()
    assert wait_until(lambda: bool(box.taker.taken), 10)
    assert box.taker.taken == {box.folder / "plain.jpg": jpeg}


def test_downloads_deletes_appends_resumes_and_hidden_names_are_refused(
    make_box: MakeBox,
) -> None:
    box = make_box()
    ftp = box.login()
    assert ftp.storbinary("STOR kept.jpg", io.BytesIO(b"y" * 1000)).startswith("226")
    for command in ("DELE kept.jpg", "APPE kept.jpg", "STOU", "REST 10", "SITE CHMOD 777 k"):
        with pytest.raises(ftplib.error_perm, match=r"500|550"):
            ftp.sendcmd(command)
    with pytest.raises(ftplib.error_perm, match=r"500|550"):
        ftp.retrbinary("RETR kept.jpg", lambda _: None)
    for hidden in (".hidden.jpg", ".ftp-incoming/x.jpg"):
        with pytest.raises(ftplib.error_perm, match="550"):
            ftp.storbinary(f"STOR {hidden}", io.BytesIO(b"z"))
    assert ".ftp-incoming" not in ftp.nlst()
    ftp.quit()


# -- half-written uploads ----------------------------------------------------------------------


def _start_upload(box: Box, name: str, *, tls: bool = True) -> tuple[ftplib.FTP, socket.socket]:
    if tls:
        ftp: ftplib.FTP = box.login()
    else:
        ftp = box.client(tls=False)
        ftp.login(DEVICE, PASSWORD)
    ftp.voidcmd("TYPE I")
    data = ftp.transfercmd(f"STOR {name}")
    return ftp, data


def test_a_slow_upload_is_not_visible_until_it_is_whole(make_box: MakeBox) -> None:
    box = make_box()
    jpeg = _jpeg()
    head, tail = jpeg[: len(jpeg) // 2], jpeg[len(jpeg) // 2 :]
    ftp, data = _start_upload(box, "slow.jpg")
    data.sendall(head)
    assert wait_until(lambda: any(p.stat().st_size == len(head) for p in box.staged()), 10)
    # The device pauses five times the settle time with its file half sent.
    assert not wait_until(lambda: bool(box.taker.calls or box.visible()), 1.0)
    data.sendall(tail)
    assert isinstance(data, ssl.SSLSocket)
    data.unwrap().close()
    assert ftp.voidresp().startswith("226")
    ftp.quit()
    assert wait_until(lambda: bool(box.taker.taken), 10)
    assert box.taker.taken == {box.folder / "slow.jpg": jpeg}
    assert len(box.taker.calls) == 1


@pytest.mark.parametrize("tls", [True, False], ids=["ftps", "plain"])
def test_a_device_that_dies_mid_file_leaves_nothing_to_take(
    make_box: MakeBox, caplog: pytest.LogCaptureFixture, tls: bool
) -> None:
    """Both connections end together, as when the device's process or power dies. On plain
    FTP the data connection's FIN alone looks exactly like a finished upload: the control
    connection ending with it is the tell. Under TLS the missing close_notify is."""
    box = make_box(allow_plain=not tls)
    jpeg = _jpeg()
    ftp, data = _start_upload(box, "cut.jpg", tls=tls)
    data.sendall(jpeg[: len(jpeg) // 2])
    assert wait_until(lambda: any(p.stat().st_size > 0 for p in box.staged()), 10)
    ftp.close()  # the kernel closes both at once: control first here, data next, no QUIT
    data.close()  # a FIN (under TLS: without close_notify)
    assert wait_until(lambda: box.receiver.stats["discarded"] == 1, 10)
    assert not wait_until(lambda: bool(box.taker.calls or box.visible()), 1.0)
    assert box.staged() == []
    assert _logged(caplog, "ftp upload incomplete; discarded")
    assert box.receiver.stats["received"] == 0


@pytest.mark.parametrize("tls", [True, False], ids=["ftps", "plain"])
def test_a_data_connection_cut_mid_file_is_not_taken_and_the_device_is_told(
    make_box: MakeBox, tls: bool
) -> None:
    """The control connection stays up; the data connection is reset (a cable pulled between
    two switches, a middlebox timing out) or, under TLS, ends without close_notify."""
    box = make_box(allow_plain=not tls)
    jpeg = _jpeg()
    ftp, data = _start_upload(box, "reset.jpg", tls=tls)
    data.sendall(jpeg[: len(jpeg) // 2])
    assert wait_until(lambda: any(p.stat().st_size > 0 for p in box.staged()), 10)
    raw = socket.socket(fileno=data.detach())  # under TLS: reset the TCP socket beneath it
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()  # RST, not FIN
    with pytest.raises(ftplib.error_temp, match="426"):
        ftp.voidresp()
    ftp.quit()
    assert not wait_until(lambda: bool(box.taker.calls or box.visible()), 1.0)
    assert box.staged() == []
    assert box.receiver.stats == {"received": 0, "discarded": 1, "refused_logins": 0}


def test_an_upload_cut_by_a_power_cut_is_cleared_at_the_next_start(
    make_box: MakeBox, tmp_path: Path
) -> None:
    staging = tmp_path / "export" / ".ftp-incoming"
    staging.mkdir(parents=True)
    (staging / "0123456789abcdef.part").write_bytes(b"half a file")
    box = make_box()
    assert box.staged() == []
    assert box.visible() == []
