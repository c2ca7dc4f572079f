"""Device accounts (/devices) in headless chromium, as the commissioning guide shows it: a drop
folder served as the SMB share ``export``, its account without a password (every login
refused), the password typed twice and set, and the page then saying so.

The panel is panelkit's; the password goes into Samba's passdb through pdbedit as on the box,
so the Unix account a Samba account needs is made for the test (with the gateway's own code) and
deleted after it. That the password set here is the one smbclient logs in with is
tests/web/test_pages_devices.py's matter, against a real smbd.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from gateway.ingest.remote.accounts import SambaAccounts, ensure_unix_account
from gateway.ingest.remote.smbconf import private_dir
from tests.peers import require_tool
from tests.smbpeer import require_root
from tests.web.browser.conftest import new_context, shoot
from tests.web.panelkit import ENGINEER, MakePanel, RunningPanel, panel_factory, services_for

pytestmark = pytest.mark.peers

DEVICE = "modality1"  # the name configuration.md's example uses
PASSWORD = "violet harbour lantern"  # not on the common list


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from panel_factory(tmp_path)


@pytest.fixture
def device_account() -> Iterator[str]:
    """The device's Unix account, as dicom-gateway share prepare makes it; gone afterwards."""
    require_root()
    require_tool("pdbedit")
    made = ensure_unix_account(DEVICE)
    try:
        yield DEVICE
    finally:
        if made:
            subprocess.run(["userdel", DEVICE], check=False, capture_output=True)


@pytest.fixture
def panel(make_panel: MakePanel, tmp_path: Path, device_account: str) -> Iterator[RunningPanel]:
    """The panel of a box whose drop folder is the share ``export`` for ``device_account``."""
    shared = Path(tempfile.mkdtemp(prefix="dgw-devices-page-"))
    (shared / "drop").mkdir()
    ingest = {
        "folder": [
            {
                "name": "export",
                "path": str(shared / "drop"),
                "share": "export",
                "share_user": device_account,
            }
        ]
    }
    services, closers = services_for(tmp_path, ingest=ingest)
    try:
        yield make_panel(services)
    finally:
        for close in closers:
            close()
        shutil.rmtree(shared, ignore_errors=True)


def test_the_share_password_is_set_in_the_browser(
    panel: RunningPanel, browser: Browser, artefacts: Path
) -> None:
    panel.setup()
    context = new_context(browser)
    page = context.new_page()
    try:
        page.goto(panel.url.rstrip("/") + "/login")
        page.fill("#username", ENGINEER[0])
        page.fill("#password", ENGINEER[1])
        page.click("button[type=submit]")
        page.get_by_role("link", name="Device accounts").click()
        expect(page.get_by_role("heading", name="Device accounts")).to_be_visible()
        card = page.locator("section", has=page.get_by_role("heading", name=DEVICE))
        expect(card).to_contain_text("SMB share")
        expect(card).to_contain_text("reached as \\\\box\\export")
        expect(card.get_by_role("status")).to_have_text(
            "No password set: every login to this account is refused."
        )

        page.fill(f"#pw-smb-{DEVICE}", PASSWORD)
        page.fill(f"#pw2-smb-{DEVICE}", PASSWORD)
        card.get_by_role("button", name="Set password").click()
        expect(page.locator("body")).to_contain_text(
            f"Password of {DEVICE} (SMB share) set: the device logs in with it now."
        )
        expect(card.get_by_role("status")).to_have_text("Password set.")
        expect(card.get_by_role("button", name="Replace password")).to_be_visible()
        assert PASSWORD not in page.content()
        shoot(page, artefacts, "19-devices", full_page=True)
    finally:
        context.close()
    # Set where smbd looks: Samba's passdb in the gateway's state folder.
    assert SambaAccounts(private_dir(panel.services.state_dir)).accounts() == {DEVICE}
