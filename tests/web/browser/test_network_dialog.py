"""Network & time in headless chromium: the clock banner, the static form, the countdown that
ticks in the browser (static/network.js), the waiting page that reloads by itself, and Revert.

The panel is panelkit's over a fake root; root's side is run by the test when a request waits,
as dicom-gateway-network-apply.path would. The fake clock stands still on the server, so the
countdown moving is the page's script alone.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from gateway.clock import FakeClock
from tests.appliance.netfakes import FakeRunner
from tests.harness import wait_until
from tests.web.browser.conftest import DOCS_SCREENSHOTS, new_context
from tests.web.netkit import NEW_ADDRESS, STATIC_FORM, Appliance, make_root
from tests.web.panelkit import ENGINEER, MakePanel, panel_factory, services_for


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from panel_factory(tmp_path)


@pytest.fixture
def box(tmp_path: Path, make_panel: MakePanel) -> Iterator[Appliance]:
    root = tmp_path / "root"
    make_root(root, appliance=True)
    clock = FakeClock()
    services, closers = services_for(tmp_path)
    made = Appliance(
        make_panel(dataclasses.replace(services, clock=clock, system_root=root)),
        root,
        clock,
        FakeRunner(),
    )
    made.keeper().boot()
    yield made
    for close in closers:
        close()


def test_apply_countdown_and_revert_in_the_browser(
    box: Appliance, browser: Browser, artefacts: Path
) -> None:
    box.panel.setup()
    context = new_context(browser)
    page = context.new_page()
    try:
        page.goto(box.panel.url.rstrip("/") + "/login")
        expect(page.locator("#clock-banner")).to_contain_text("not synchronised")
        page.fill("#username", ENGINEER[0])
        page.fill("#password", ENGINEER[1])
        page.click("button[type=submit]")
        page.goto(box.panel.url.rstrip("/") + "/network")
        page.check("#mode-static")
        for name in ("address", "gateway", "dns", "ntp", "hostname"):
            page.fill(f"#net-{name}", STATIC_FORM[name])
        page.click("#apply")
        expect(page.locator("#waiting")).to_be_visible()
        assert wait_until(lambda: len(box.requests()) == 1, 10)
        assert box.path_unit() == ["pending"]
        # The waiting page reloads by itself into the dialog.
        counter = page.locator("#countdown")
        expect(counter).to_be_visible(timeout=10_000)
        start = int(counter.inner_text())
        assert start == 120
        page.wait_for_function(
            "() => Number(document.getElementById('countdown').textContent) < 119"
        )
        expect(page.locator("#trial")).to_contain_text(f"https://{NEW_ADDRESS}:")
        shot = artefacts / "network-trial.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOTS / shot.name)
        page.click("#revert")
        assert wait_until(lambda: len(box.requests()) == 1, 10)
        assert box.path_unit() == ["rolled_back"]
        expect(page.locator("#outcome")).to_contain_text("reverted by web:eng", timeout=10_000)
        expect(page.locator("#net-address")).to_have_value("192.0.2.10/24")
    finally:
        context.close()
