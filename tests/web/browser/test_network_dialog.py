"""Network & time in headless chromium: the clock banner, the static form, the countdown that
ticks in the browser (static/network.js), the waiting page that reloads by itself, and Revert.

The panel is panelkit's over a fake root; root's side is run by the test when a request waits,
as dicom-gateway-network-apply.path would. The fake clock stands still on the server, so the
countdown moving is the page's script alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from gateway.clock import FakeClock
from tests.appliance.netfakes import FakeRunner
from tests.harness import wait_until
from tests.web.browser.conftest import new_context, shoot
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
        # What the guide's picture of the form shows: the static address typed in, the box's
        # current settings beside it, and the button that names the confirmation time.
        expect(page.locator("#net-address")).to_have_value(STATIC_FORM["address"])
        expect(page.locator("#apply")).to_have_text("Apply (confirm within 120 s)")
        expect(page.get_by_role("heading", name="Now")).to_be_visible()
        shoot(page, artefacts, "17-network", full_page=True)
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
        trial = page.locator("#trial")
        expect(trial.get_by_role("heading", name="Keep these network settings?")).to_be_visible()
        expect(trial).to_contain_text(f"https://{NEW_ADDRESS}:")
        expect(trial).to_contain_text("a confirmation counts only at the new one")
        # At the old address there is nothing to confirm with, only Revert now.
        expect(page.locator("#confirm")).to_have_count(0)
        expect(page.locator("#revert")).to_have_text("Revert now")
        shoot(page, artefacts, "18-network-trial", full_page=True)
        page.click("#revert")
        assert wait_until(lambda: len(box.requests()) == 1, 10)
        assert box.path_unit() == ["rolled_back"]
        expect(page.locator("#outcome")).to_contain_text("reverted by web:eng", timeout=10_000)
        expect(page.locator("#net-address")).to_have_value("192.0.2.10/24")
    finally:
        context.close()
