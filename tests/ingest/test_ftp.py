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
JPEGS = sorted(Path("/usr/share").rglob("*.jpg"))
JPEG = next(iter(JPEGS), None)
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _jpeg() -> bytes:
    if JPEG is None:
        pytest.skip("no JPEG under /usr/share on this machine")
    return JPEG.read_bytes()


def _two_jpegs() -> tuple[bytes, bytes]:
    """Two different real images: the first study's and the next one's."""
    if len(JPEGS) < 2:
        pytest.skip("fewer than two JPEGs under /usr/share on this machine")
    first, second = JPEGS[0].read_bytes(), JPEGS[1].read_bytes()
    assert first != second
    return first, second


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
    start_watching: Callable[[], None]

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

    def make(*, watch: bool = True, **settings: Any) -> Box:
        """A running receiver; its folder watched at once, or (``watch`` False) when asked."""
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

        def start_watching() -> None:
            watcher.start()
            assert wait_until(lambda: _logged(caplog, "watching with inotify"), 5.0)

        def stop_all() -> None:
            watcher.stop()
            stop.set()
            thread.join(10)
            receiver.close()

        stops.append(stop_all)
        if watch:
            start_watching()
        trust = ssl.create_default_context(cafile=str(pki.ca))
        return Box(receiver, folder, taker, port, (passive, passive), trust, pki.ca, start_watching)

    yield make
    for stop_all in stops:
        stop_all()


def _logged(caplog: pytest.LogCaptureFixture, message: str) -> bool:
    return _count(caplog, message) > 0


def _count(caplog: pytest.LogCaptureFixture, message: str) -> int:
    return sum(r.getMessage() == message for r in caplog.records)


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


def curl_upload(curl: str, box: Box, source: Path, name: str) -> subprocess.CompletedProcess[str]:
    """curl (someone else's FTP client) uploads ``source`` as ``name`` over FTPS, as the device."""
    return subprocess.run(
        [curl, "--silent", "--show-error", "--ssl-reqd", "--cacert", str(box.ca),
         "--user", f"{DEVICE}:{PASSWORD}", "--upload-file", str(source),
         f"ftp://127.0.0.1:{box.port}/{name}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_curl_uploads_over_ftps_with_the_box_certificate(make_box: MakeBox) -> None:
    curl = require_tool("curl")
    box = make_box()
    jpeg = _jpeg()
    done = curl_upload(curl, box, JPEG, "from-curl.jpg")
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


# -- a name that is taken: nothing replaced ----------------------------------------------------


def _store(ftp: ftplib.FTP, name: str, data: bytes) -> str:
    answer: str = ftp.storbinary(f"STOR {name}", io.BytesIO(data))
    return answer


def test_the_same_name_uploaded_twice_before_it_is_taken_keeps_both(
    make_box: MakeBox, caplog: pytest.LogCaptureFixture
) -> None:
    """The device's counter starts again at IMG0001.JPG for the next study while the first
    study's IMG0001.JPG still waits in the folder (the watcher is not running yet)."""
    box = make_box(watch=False)
    first, second = _two_jpegs()
    ftp = box.login()
    assert _store(ftp, "IMG0001.JPG", first).startswith("226")
    answer = _store(ftp, "IMG0001.JPG", second)
    assert (box.folder / "IMG0001.JPG").read_bytes() == first  # not replaced
    assert answer.startswith("226") and "ftp-duplicate-2/" in answer
    ftp.quit()
    assert (box.folder / "ftp-duplicate-2" / "IMG0001.JPG").read_bytes() == second
    assert box.staged() == []
    assert box.receiver.stats["received"] == 2
    assert _count(caplog, "ftp upload named like a waiting file; both kept") == 1
    # The watcher takes both, each once, under the name the device gave.
    box.start_watching()
    assert wait_until(lambda: len(box.taker.taken) == 2, 10)
    assert box.taker.taken == {
        box.folder / "IMG0001.JPG": first,
        box.folder / "ftp-duplicate-2" / "IMG0001.JPG": second,
    }
    assert len(box.taker.calls) == 2


def test_the_same_file_sent_again_is_kept_twice(make_box: MakeBox) -> None:
    """The device missed the 226 and sends the same file again: both copies are kept (a second
    instance at the PACS can be deleted; an image dropped as "the same" cannot come back, and
    a file and its sidecar cannot be judged the same one at a time)."""
    box = make_box(watch=False)
    first, _ = _two_jpegs()
    ftp = box.login()
    _store(ftp, "IMG0001.JPG", first)
    answer = _store(ftp, "IMG0001.JPG", first)
    ftp.quit()
    assert answer.startswith("226") and "ftp-duplicate-2/" in answer
    assert (box.folder / "IMG0001.JPG").read_bytes() == first
    assert (box.folder / "ftp-duplicate-2" / "IMG0001.JPG").read_bytes() == first


def test_an_identical_sidecar_does_not_part_the_next_image_from_its_own(
    make_box: MakeBox,
) -> None:
    """Study 1 (image A and its sidecar) waits; the device then sends study 2 sidecar first,
    whose bytes happen to equal study 1's (same patient), then a different image B. Dropping
    the "identical" sidecar sent B alone into ftp-duplicate-2: bound without its identity."""
    box = make_box(watch=False)
    first, second = _two_jpegs()
    sidecar = b'{"patient_id": "P1", "accession_number": "A1"}'
    ftp = box.login()
    _store(ftp, "IMG1.jpg", first)
    _store(ftp, "IMG1.jpg.json", sidecar)
    ftp.quit()
    ftp = box.login()  # study 2
    _store(ftp, "IMG1.jpg.json", sidecar)
    _store(ftp, "IMG1.jpg", second)
    ftp.quit()
    aside = box.folder / "ftp-duplicate-2"
    assert sorted(p.name for p in aside.iterdir()) == ["IMG1.jpg", "IMG1.jpg.json"]
    assert (aside / "IMG1.jpg").read_bytes() == second
    assert (box.folder / "IMG1.jpg").read_bytes() == first


def test_a_running_watcher_takes_the_file_that_landed_beside(make_box: MakeBox) -> None:
    """The duplicate folder is made while the folder is watched; the file in it is taken."""
    box = make_box()
    first, second = _two_jpegs()
    box.taker.answers.extend([False] * 10_000)  # intake keeps the first waiting (storage busy)
    ftp = box.login()
    _store(ftp, "IMG0001.JPG", first)
    assert wait_until(lambda: len(box.taker.calls) >= 1, 10)
    assert "ftp-duplicate-2/" in _store(ftp, "IMG0001.JPG", second)
    ftp.quit()
    with box.taker.lock:
        box.taker.answers.clear()  # storage back: both are taken
    assert wait_until(lambda: len(box.taker.taken) == 2, 10)
    assert box.taker.taken == {
        box.folder / "IMG0001.JPG": first,
        box.folder / "ftp-duplicate-2" / "IMG0001.JPG": second,
    }


def test_curl_uploading_a_name_twice_keeps_both(make_box: MakeBox) -> None:
    curl = require_tool("curl")
    box = make_box(watch=False)
    first, second = _two_jpegs()
    for source in JPEGS[:2]:
        done = curl_upload(curl, box, source, "exam.jpg")
        assert done.returncode == 0, done.stderr
    assert (box.folder / "exam.jpg").read_bytes() == first
    assert (box.folder / "ftp-duplicate-2" / "exam.jpg").read_bytes() == second


def test_two_connections_uploading_one_name_at_once_both_keep_their_file(
    make_box: MakeBox,
) -> None:
    """Two devices (or one device's two sessions) send IMG0001.JPG at the same time: both
    data connections are open before either ends."""
    box = make_box(watch=False)
    first, second = _two_jpegs()
    one, data_one = _start_upload(box, "IMG0001.JPG")
    two, data_two = _start_upload(box, "IMG0001.JPG")
    data_one.sendall(first)
    data_two.sendall(second)
    assert wait_until(lambda: len(box.staged()) == 2, 10)
    for ftp, data in ((one, data_one), (two, data_two)):
        assert isinstance(data, ssl.SSLSocket)
        data.unwrap().close()
        assert ftp.voidresp().startswith("226")
        ftp.quit()
    kept = [p for p in box.folder.rglob("*") if p.is_file() and ".ftp-incoming" not in p.parts]
    assert sorted(p.read_bytes() for p in kept) == sorted([first, second])
    assert {p.relative_to(box.folder).as_posix() for p in kept} == {
        "IMG0001.JPG",
        "ftp-duplicate-2/IMG0001.JPG",
    }
    assert box.staged() == []


def test_a_sidecar_follows_its_file_to_where_it_landed(make_box: MakeBox) -> None:
    """Study 2's file met study 1's waiting file and landed in ftp-duplicate-2; study 1 is then
    taken (file and sidecar) before study 2's sidecar arrives: the sidecar still goes beside
    its own file, not to the free name in the folder, where the next file would take it."""
    box = make_box(watch=False)
    first, second = _two_jpegs()
    ftp = box.login()
    _store(ftp, "IMG0001.JPG", first)
    _store(ftp, "IMG0001.JPG.json", b'{"patient_id": "P1"}')
    ftp.quit()
    ftp = box.login()  # study 2, a new connection
    assert "ftp-duplicate-2/" in _store(ftp, "IMG0001.JPG", second)
    for taken in ("IMG0001.JPG", "IMG0001.JPG.json"):
        (box.folder / taken).unlink()  # as intake does once study 1 is queued
    assert _store(ftp, "IMG0001.JPG.json", b'{"patient_id": "P2"}').startswith("226")
    ftp.quit()
    aside = box.folder / "ftp-duplicate-2"
    assert sorted(p.name for p in aside.iterdir()) == ["IMG0001.JPG", "IMG0001.JPG.json"]
    assert (aside / "IMG0001.JPG.json").read_bytes() == b'{"patient_id": "P2"}'
    assert box.visible() == ["ftp-duplicate-2"]


def test_a_file_renamed_onto_a_waiting_name_keeps_both(make_box: MakeBox) -> None:
    """A device that uploads under a temporary name and renames it when done (RNFR/RNTO):
    pyftpdlib's rename replaced the waiting file; a refusal would leave the image under a
    temporary name the watcher never takes. It lands beside the waiting one instead."""
    box = make_box(watch=False)
    first, second = _two_jpegs()
    ftp = box.login()
    _store(ftp, "IMG0001.JPG", first)
    _store(ftp, "IMG0001.JPG.tmp", second)
    assert ftp.sendcmd("RNFR IMG0001.JPG.tmp").startswith("350")
    answer = ftp.sendcmd("RNTO IMG0001.JPG")
    assert (box.folder / "IMG0001.JPG").read_bytes() == first  # not replaced
    assert answer.startswith("250") and "ftp-duplicate-2/" in answer
    # A name that is free is an ordinary rename.
    _store(ftp, "other.tmp", first)
    ftp.rename("other.tmp", "other.jpg")
    ftp.rename("other.jpg", "other.jpg")  # onto itself: the one file is not the other's copy
    ftp.quit()
    assert (box.folder / "IMG0001.JPG").read_bytes() == first
    assert (box.folder / "ftp-duplicate-2" / "IMG0001.JPG").read_bytes() == second
    assert (box.folder / "other.jpg").read_bytes() == first
    assert box.visible() == ["IMG0001.JPG", "ftp-duplicate-2", "other.jpg"]


def test_a_folder_renamed_onto_a_name_that_exists_is_refused(make_box: MakeBox) -> None:
    box = make_box(watch=False)
    jpeg = _jpeg()
    ftp = box.login()
    ftp.mkd("study1")
    _store(ftp, "study1/IMG0001.JPG", jpeg)
    ftp.mkd("study2")  # empty: os.rename would replace it without a word
    _store(ftp, "waiting.jpg", jpeg)
    for target in ("study2", "waiting.jpg"):
        ftp.sendcmd("RNFR study1")
        with pytest.raises(ftplib.error_perm, match="553"):
            ftp.sendcmd(f"RNTO {target}")
    ftp.quit()
    assert (box.folder / "study1" / "IMG0001.JPG").read_bytes() == jpeg
    assert (box.folder / "study2").is_dir()
    assert (box.folder / "waiting.jpg").read_bytes() == jpeg
