"""A whole room for browser tests: the real daemon with its panel on a loopback port, DCMTK
wlmscpfs as the RIS, storescp as the PACS, a drop folder, and headless Debian chromium.

The room is module-scoped: a module's tests are the steps of one visit, run in file order.
Screenshots go to ``$ARTEFACTS_DIR`` (else a tmp folder); with ``UPDATE_SCREENSHOTS=1`` they are
also copied into docs/screenshots/ for the commissioning guide.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from pydicom.dataset import Dataset

from gateway.simulate.socat import PtyPair
from tests.harness import GatewayProcess, wait_until, write_config
from tests.peers import StoreSCP, free_port, require_tool
from tests.worklist.factory import mwl_dataset
from tests.worklist.wlmfiles import WlmScp

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
VIEWPORT = {"width": 1024, "height": 768}
TODAY = datetime.date.today().strftime("%Y%m%d")
HOSTILE_NAME = "<script>alert(1)</script>"

# The RIS's worklist: two ordinary steps and one whose patient name is markup.
WORKLIST = (
    mwl_dataset(
        patient_name="Garcia^Maria",
        patient_id="PID-B1",
        accession_number="ACC2001",
        study_instance_uid="1.2.826.0.1.3680043.10.1.9201",
        step_id="SPS2001",
        start_date=TODAY,
    ),
    mwl_dataset(
        patient_name="Okafor^Chidi",
        patient_id="PID-B2",
        accession_number="ACC2002",
        study_instance_uid="1.2.826.0.1.3680043.10.1.9202",
        step_id="SPS2002",
        start_date=TODAY,
        start_time="110000",
    ),
    mwl_dataset(
        patient_name=HOSTILE_NAME,
        patient_id="PID-B3",
        accession_number="ACC2003",
        study_instance_uid="1.2.826.0.1.3680043.10.1.9203",
        step_id="SPS2003",
        start_date=TODAY,
        start_time="140000",
    ),
)


@dataclass
class Room:
    """The daemon, its peers and where to look."""

    gateway: GatewayProcess
    pacs: StoreSCP
    ris: WlmScp
    url: str
    artefacts: Path

    @property
    def config(self) -> Path:
        return self.gateway.config

    @property
    def drop_dir(self) -> Path:
        return self.gateway.root / "drop"

    def received(self) -> list[Dataset]:
        """Every object storescp has written so far."""
        return [pydicom.dcmread(p) for p in self.pacs.received()]

    def setup_token(self) -> str:
        """The one-time token, as the engineer reads it on the box."""
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "setup-token", "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def shot(self, page: Page, name: str) -> Path:
        """A screenshot of the page as the user sees it; copied to the docs when asked."""
        return shoot(page, self.artefacts, name)


def shoot(page: Page, artefacts: Path, name: str, *, full_page: bool = False) -> Path:
    """``<artefacts>/<name>.png`` of the page as the user sees it (the whole page with
    ``full_page``); with ``UPDATE_SCREENSHOTS=1`` also docs/screenshots/<name>.png, which the
    commissioning guide shows. Every browser module photographs through this one helper, so
    the guide's pictures have stable names and one viewport."""
    path = artefacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def room_config(root: Path, pacs_port: int, ris_port: int, web_port: int, serial: Path) -> Path:
    """The harness config with files named by accession, a worklist, a serial line on
    ``serial`` and the panel on."""
    path = write_config(root, pacs_port)
    text = path.read_text("utf-8")
    text = text.replace(
        "filename_pattern = '^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_'",
        "filename_pattern = '^(?P<accession_number>ACC[0-9]+)_'",
    )
    text = text.replace(
        "[web]\nenabled = false\n",
        f'[web]\nenabled = true\nbind = "127.0.0.1"\nport = {web_port}\nlogin_max_failures = 3\n',
    )
    text += f"""
[worklist]
ae_title = "RIS"
host = "127.0.0.1"
port = {ris_port}
refresh_seconds = 5
live_query_timeout = 2
connect_timeout = 2

[[ingest.serial]]
name = "analyzer"
port = "{serial}"
profile = "line-kv"
reopen_max_seconds = 1
"""
    path.write_text(text, "utf-8")
    return path


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Where this module's screenshots go."""
    base = os.environ.get("ARTEFACTS_DIR")
    root = Path(base) if base else tmp_path_factory.mktemp("artefacts")
    folder = root / request.module.__name__.rsplit(".", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory, artefacts: Path) -> Iterator[Room]:
    """The daemon with its panel, the RIS and the PACS; all stopped at the module's end."""
    tmp = tmp_path_factory.mktemp("room")
    ris = WlmScp(tmp / "ris")
    for ds in WORKLIST:
        ris.add(ds, "ISO_IR 192")
    pacs = StoreSCP(tmp / "pacs")
    require_tool("socat")
    line = PtyPair(tmp / "analyzer-gw", tmp / "analyzer-dev")
    web_port = free_port()
    gateway = GatewayProcess(room_config(tmp / "gw", pacs.port, ris.port, web_port, line.a))
    try:
        line.start()
        ris.start()
        pacs.start()
        gateway.start()
        token_file = gateway.root / "state" / "web" / "setup-token"
        assert wait_until(token_file.exists, 30), gateway.log()
        yield Room(gateway, pacs, ris, f"https://127.0.0.1:{web_port}", artefacts)
    finally:
        gateway.stop()
        pacs.stop()
        ris.stop()
        line.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian chromium (never a downloaded one)."""
    executable = require_tool("chromium")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        yield launched
        launched.close()


def new_context(browser: Browser) -> BrowserContext:
    """A fresh visitor: no cookies, the panel's self-signed certificate accepted."""
    context = browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    return context


@pytest.fixture(scope="module")
def engineer_page(browser: Browser) -> Iterator[Page]:
    """The engineer's tab, kept across the module's steps; any JavaScript dialog fails."""
    context = new_context(browser)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()
    assert dialogs == [], f"a dialog fired: {dialogs}"


@pytest.fixture
def visitor_page(browser: Browser) -> Iterator[Page]:
    """A separate visitor (own cookies) for one test; any JavaScript dialog fails."""
    context = new_context(browser)
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()
    assert dialogs == [], f"a dialog fired: {dialogs}"
