"""Device accounts (/devices) through the real HTTPS panel: the password of each folder's SMB
and FTP account, then a real login with it: smbclient against a real smbd, ftplib against the
gateway's FTP receiver."""

from __future__ import annotations

import ftplib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from gateway.ingest.remote.ftp import FtpReceiver
from gateway.ingest.remote.ftpaccounts import FtpAccounts, ftp_dir
from gateway.ingest.remote.smbconf import private_dir
from gateway.web.auth import Role
from tests.peers import free_port
from tests.smbpeer import SambaServer, owner_ids, unix_accounts
from tests.web.panelkit import (
    ENGINEER,
    TECHNOLOGIST,
    MakePanel,
    RunningPanel,
    csrf_of,
    services_for,
)
from tests.web.panelkit import panel_factory as _panel_factory

SMB_DEVICE, FTP_DEVICE = "dgwtest-smb1", "dgwtest-ftp1"
PASSWORD = "violet harbour lantern"  # not on the common list


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from _panel_factory(tmp_path)


@pytest.fixture
def shared() -> Iterator[Path]:
    """The drop folders: reachable by smbd's forced user (pytest's tmp folders are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="dgw-panel-smb-"))
    os.chmod(root, 0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def panel(make_panel: MakePanel, tmp_path: Path, shared: Path) -> Iterator[RunningPanel]:
    """The panel of a box with one SMB-shared folder and one FTP folder."""
    (shared / "export").mkdir()
    (shared / "ftpin").mkdir()
    ingest: dict[str, Any] = {
        "folder": [
            {
                "name": "export",
                "path": str(shared / "export"),
                "share": "export",
                "share_user": SMB_DEVICE,
            },
            {"name": "ftpin", "path": str(shared / "ftpin"), "ftp_user": FTP_DEVICE},
        ],
        "ftp": {"port": free_port()},
    }
    services, closers = services_for(tmp_path, ingest=ingest)
    try:
        yield make_panel(services)
    finally:
        for close in closers:
            close()


def _set(
    client: httpx.Client, kind: str, account: str, password: str, again: str | None = None
) -> httpx.Response:
    page = client.get("/devices")
    assert page.status_code == 200, page.text
    return client.post(
        f"/devices/{kind}/{account}/password",
        data={
            "csrf_token": csrf_of(page.text),
            "password": password,
            "password2": password if again is None else again,
        },
    )


def _section(html: str, account: str) -> str:
    start = html.index(f"<h2>{account} ")
    end = html.find("</section>", start)
    return html[start:end]


def test_accounts_without_a_password_say_every_login_is_refused(
    panel: RunningPanel, tmp_path: Path, shared: Path
) -> None:
    engineer = panel.setup()
    page = engineer.get("/devices")
    assert page.status_code == 200
    for account in (SMB_DEVICE, FTP_DEVICE):
        assert "No password set: every login to this account is refused." in _section(
            page.text, account
        )
    assert "\\\\box\\export" in page.text


def test_the_ftp_password_set_in_the_form_logs_the_device_in_and_is_never_shown_or_logged(
    panel: RunningPanel, shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engineer = panel.setup()
    answer = _set(engineer, "ftp", FTP_DEVICE, PASSWORD)
    assert answer.status_code == 303, answer.text
    page = engineer.get("/devices")
    assert "Password set." in _section(page.text, FTP_DEVICE)
    assert "set: the device logs in with it now" in page.text  # the flash
    assert PASSWORD not in page.text
    records = [r for r in panel.audit_lines() if r["action"] == "device_account.set_password"]
    assert len(records) == 1
    assert records[0]["target"] == f"ftp:{FTP_DEVICE}"
    assert records[0]["actor"] == f"web:{ENGINEER[0]}"
    state = panel.services.state_dir
    for path in state.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert PASSWORD not in caplog.text
    # A real client logs in with it (plain FTP here: FTPS is the receiver's own tests' matter).
    config = panel.services.config
    settings = config.ingest.ftp.model_copy(update={"bind": "127.0.0.1", "allow_plain": True})
    receiver = FtpReceiver(
        settings,
        {FTP_DEVICE: shared / "ftpin"},
        FtpAccounts(ftp_dir(state)),
        logging.getLogger("t.ftp"),
        refusal_delay=0.1,
    )
    receiver.listen(None)
    stop = threading.Event()
    thread = threading.Thread(target=receiver.serve, args=(stop,))
    thread.start()
    try:
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", settings.port, timeout=20)
        assert ftp.login(FTP_DEVICE, PASSWORD).startswith("230")
        ftp.quit()
        refused = ftplib.FTP()
        refused.connect("127.0.0.1", settings.port, timeout=20)
        with pytest.raises(ftplib.error_perm, match="530"):
            refused.login(FTP_DEVICE, "violet harbour lanterns")
        refused.close()
    finally:
        stop.set()
        thread.join(10)
        receiver.close()


def test_refused_passwords_change_nothing(
    panel: RunningPanel, tmp_path: Path, shared: Path
) -> None:
    engineer = panel.setup()
    for password, again, reason in (
        (PASSWORD, PASSWORD + "x", "The two passwords differ."),
        ("short", None, "at least 10 characters"),
        ("password123", None, "commonest"),
        (FTP_DEVICE, None, "must not be the user name"),
        ("x" * 128, None, "at most 127 characters"),
        ("tab\tinside it", None, "control characters"),
    ):
        answer = _set(engineer, "ftp", FTP_DEVICE, password, again)
        assert answer.status_code == 422, password
        assert reason in answer.text, answer.text
        if password != FTP_DEVICE:  # never shown back (the account's own name is, of course)
            assert password not in answer.text
    assert FtpAccounts(ftp_dir(panel.services.state_dir)).accounts() == set()
    assert not [r for r in panel.audit_lines() if r["action"] == "device_account.set_password"]


def test_only_an_engineer_with_the_csrf_token_sets_one_and_only_for_configured_accounts(
    panel: RunningPanel, tmp_path: Path, shared: Path
) -> None:
    engineer = panel.setup()
    panel.add_user(*TECHNOLOGIST, Role.TECHNOLOGIST)
    technologist = panel.login(*TECHNOLOGIST)
    assert technologist.get("/devices").status_code == 403
    form = {"password": PASSWORD, "password2": PASSWORD}
    tech_page = technologist.get("/account")
    answer = technologist.post(
        f"/devices/ftp/{FTP_DEVICE}/password", data={**form, "csrf_token": csrf_of(tech_page.text)}
    )
    assert answer.status_code == 403
    anonymous = panel.browser()
    assert anonymous.get("/devices").headers["location"] == "/login"
    forged = engineer.post(
        f"/devices/ftp/{FTP_DEVICE}/password", data={**form, "csrf_token": "forged"}
    )
    assert forged.status_code == 403
    assert _set(engineer, "ftp", "dgwtest-other", PASSWORD).status_code == 404
    assert _set(engineer, "smb", FTP_DEVICE, PASSWORD).status_code == 404  # not its kind
    assert FtpAccounts(ftp_dir(panel.services.state_dir)).accounts() == set()


@pytest.mark.peers
def test_the_smb_password_set_in_the_form_is_the_one_smbclient_logs_in_with(
    panel: RunningPanel, tmp_path: Path, shared: Path
) -> None:
    config: GatewayConfig = panel.services.config
    with unix_accounts([SMB_DEVICE]):
        samba = SambaServer(
            tmp_path / "samba", config, private=private_dir(panel.services.state_dir)
        )
        uid, gid = owner_ids()
        os.chown(shared / "export", uid, gid)
        os.chmod(shared / "export", 0o2770)
        samba.start()
        try:
            # No password yet: nothing gets in, not even with an empty one or as a guest.
            for user, password in ((SMB_DEVICE, ""), (SMB_DEVICE, PASSWORD), ("guest", "")):
                before = samba.client("export", user, password, "ls")
                assert before.returncode != 0
                assert "NT_STATUS_LOGON_FAILURE" in before.stdout + before.stderr, before
            engineer = panel.setup()
            assert "No password set" in _section(engineer.get("/devices").text, SMB_DEVICE)
            answer = _set(engineer, "smb", SMB_DEVICE, PASSWORD)
            assert answer.status_code == 303, answer.text
            assert "Password set." in _section(engineer.get("/devices").text, SMB_DEVICE)
            after = samba.client("export", SMB_DEVICE, PASSWORD, "ls")
            assert after.returncode == 0, after.stdout + after.stderr
            wrong = samba.client("export", SMB_DEVICE, "violet harbour lanterns", "ls")
            assert wrong.returncode != 0
            audit = [r for r in panel.audit_lines() if r["target"] == f"smb:{SMB_DEVICE}"]
            assert [r["action"] for r in audit] == ["device_account.set_password"]
            assert PASSWORD not in json.dumps(panel.audit_lines())
        finally:
            samba.stop()
