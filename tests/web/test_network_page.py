"""Network & time through the real HTTPS panel, with root's side run in the test as the path unit
would run it (NetworkKeeper over a fake root, a recording runner, one fake clock for both).

The panel at the box's *new* address is tests.web.netkit's in-process client
(test_the_page_sees_the_local_address_the_connection_reached checks uvicorn's side with real
sockets). A browser there has no session cookie of the old address, as in life.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.appliance.nettrial import read_status
from gateway.clock import FakeClock
from gateway.web.auth import Role
from tests.appliance.netfakes import FakeRunner
from tests.web.netkit import NEW_ADDRESS, OLD, STATIC_FORM, Appliance, make_root
from tests.web.panelkit import (
    ENGINEER,
    TECHNOLOGIST,
    MakePanel,
    csrf_of,
    panel_factory,
    services_for,
)


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from panel_factory(tmp_path)


@pytest.fixture
def box(tmp_path: Path, make_panel: MakePanel) -> Iterator[Appliance]:
    root = tmp_path / "root"
    make_root(root, appliance=True)
    clock = FakeClock()
    services, closers = services_for(tmp_path)
    services = dataclasses.replace(services, clock=clock, system_root=root)
    made = Appliance(make_panel(services), root, clock, FakeRunner())
    assert made.keeper().boot().state == "applied"  # dicom-gateway-network.service at boot
    yield made
    for close in closers:
        close()


def apply_static(box: Appliance, client: httpx.Client) -> None:
    page = client.get("/network")
    answer = client.post("/network", data={"csrf_token": csrf_of(page.text), **STATIC_FORM})
    assert answer.status_code == 303, answer.text
    assert len(box.requests()) == 1
    assert box.path_unit() == ["pending"]


def post_trial_form(client: httpx.Client, action: str) -> httpx.Response:
    page = client.get("/network")
    found = re.search(
        rf'action="/network/{action}".*?name="trial" value="([0-9a-f]+)"', page.text, re.S
    )
    assert found, page.text
    return client.post(
        f"/network/{action}", data={"csrf_token": csrf_of(page.text), "trial": found.group(1)}
    )


def test_static_address_form_round_trip(box: Appliance) -> None:
    client = box.panel.setup()
    page = client.get("/network")
    assert page.status_code == 200
    assert 'value="192.0.2.10/24"' in page.text  # the applied settings fill the form
    apply_static(box, client)
    # Root rendered what the form said, and the old settings are still the applied ones.
    rendered = box.rendered()
    for line in (
        f"Address={NEW_ADDRESS}/24",
        "Gateway=198.51.100.1",
        "DNS=198.51.100.53",
        "DNS=198.51.100.54",
        "Domains=radiology.example.org",
    ):
        assert line in rendered
    timesyncd = (box.root / "run/systemd/timesyncd.conf.d/dicom-gateway.conf").read_text()
    assert "NTP=ntp.example.org 198.51.100.123" in timesyncd
    assert box.runner.hostnames[-1] == "ct-room-2-gateway"
    assert (box.root / "data/system/network.toml").read_text() == OLD
    audit = [r for r in box.panel.audit_lines() if r["action"] == "network.apply"]
    assert len(audit) == 1 and audit[0]["actor"] == "web:eng"

    at_new = box.at_new_address()
    assert post_trial_form(at_new, "confirm").status_code == 303
    assert box.path_unit() == ["confirmed"]
    page = at_new.get("/network")
    for value in (
        f"{NEW_ADDRESS}/24",
        "198.51.100.1",
        "198.51.100.53 198.51.100.54",
        "radiology.example.org",
        "ntp.example.org 198.51.100.123",
        "ct-room-2-gateway",
    ):
        assert f'value="{value}"' in page.text, value
    assert "network change confirmed by web:eng" in page.text


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"address": "192.0.2.300/24"}, "address", "not an address with a prefix"),
        ({"address": "198.51.100.7"}, "address", "with its prefix"),
        ({"address": ""}, "address", "needs address"),
        ({"gateway": "192.0.2.1"}, "gateway", "is not in the address"),
        ({"dns": "198.51.100.53 dns.example.org"}, "dns", "not an IP address"),
        (
            {"ntp": "ntp.example.org ntp_2.example.org"},
            "ntp",
            "neither an IP address nor a host name",
        ),
        ({"hostname": "ct_room_2"}, "hostname", "letters, digits and"),
        ({"name": "eth0;rm"}, "name", "not a link name"),
    ],
)
def test_invalid_input_is_named_at_its_field_and_nothing_is_sent(
    box: Appliance, changes: dict[str, str], field: str, words: str
) -> None:
    client = box.panel.setup()
    page = client.get("/network")
    answer = client.post(
        "/network", data={"csrf_token": csrf_of(page.text), **STATIC_FORM, **changes}
    )
    assert answer.status_code == 422
    error = re.search(rf'<p class="field-error" id="err-{field}">([^<]*)</p>', answer.text)
    assert error and words in error.group(1), answer.text
    assert re.search(rf'id="net-{field}"[^>]*aria-invalid="true"', answer.text) or field == "mode"
    # Only that field is marked, and what was typed is kept.
    assert answer.text.count('class="field-error"') == 1
    assert (
        f'value="{STATIC_FORM["hostname"] if field != "hostname" else changes["hostname"]}"'
        in answer.text
    )
    assert box.requests() == []


def test_dhcp_ignores_the_static_inputs(box: Appliance) -> None:
    client = box.panel.setup()
    page = client.get("/network")
    form = {**STATIC_FORM, "mode": "dhcp", "address": "not used", "gateway": "nor this"}
    assert (
        client.post("/network", data={"csrf_token": csrf_of(page.text), **form}).status_code == 303
    )
    assert box.path_unit() == ["pending"]
    assert "DHCP=ipv4" in box.rendered() and "Address=" not in box.rendered()


def test_confirm_must_come_from_the_new_address_in_time(box: Appliance) -> None:
    client = box.panel.setup()
    apply_static(box, client)
    page = client.get("/network")
    # The dialog at the old address: the countdown, where to confirm, no confirm button.
    assert 'data-countdown="120"' in page.text
    port = box.panel.services.config.web.port
    assert f'href="https://{NEW_ADDRESS}:{port}/network"' in page.text
    assert 'id="confirm"' not in page.text and 'id="revert"' in page.text
    # A confirmation from the old address (posted anyway) does not count.
    trial = re.search(r'name="trial" value="([0-9a-f]+)"', page.text)
    assert trial
    forged = client.post(
        "/network/confirm", data={"csrf_token": csrf_of(page.text), "trial": trial.group(1)}
    )
    assert forged.status_code == 303
    assert box.path_unit() == ["pending"]
    status = read_status(box.keeper().spool_dir)
    assert status is not None and "not counted" in status.message

    box.clock.advance(100)
    at_new = box.at_new_address()
    page = at_new.get("/network")
    assert 'data-countdown="20"' in page.text and 'id="confirm"' in page.text
    assert post_trial_form(at_new, "confirm").status_code == 303
    assert box.path_unit() == ["confirmed"]
    assert f'address = "{NEW_ADDRESS}/24"' in (box.root / "data/system/network.toml").read_text()
    box.clock.advance(600)
    assert box.keeper().rollback_due() is None  # the timer finds nothing to roll back


def test_no_confirmation_in_time_brings_the_old_settings_back(box: Appliance) -> None:
    client = box.panel.setup()
    apply_static(box, client)
    box.clock.advance(119)
    assert box.keeper().rollback_due() is None  # dicom-gateway-network-rollback.timer's check
    assert 'data-countdown="1"' in client.get("/network").text
    box.clock.advance(1)
    done = box.keeper().rollback_due()
    assert done is not None and done.state == "rolled_back"
    assert "Address=192.0.2.10/24" in box.rendered()
    page = client.get("/network")
    assert "rolled back: not confirmed within 120 s" in page.text
    assert 'id="countdown"' not in page.text and 'value="192.0.2.10/24"' in page.text
    # Too late from the new address as well.
    at_new = box.at_new_address()
    assert "Keep these settings" not in at_new.get("/network").text
    assert (box.root / "data/system/network.toml").read_text() == OLD


def test_revert_from_the_old_address(box: Appliance) -> None:
    client = box.panel.setup()
    apply_static(box, client)
    assert post_trial_form(client, "revert").status_code == 303
    assert box.path_unit() == ["rolled_back"]
    assert "Address=192.0.2.10/24" in box.rendered()
    assert "reverted by web:eng" in client.get("/network").text


def test_a_second_apply_during_the_trial_is_refused(box: Appliance) -> None:
    client = box.panel.setup()
    apply_static(box, client)
    page = client.get("/network")
    assert 'id="apply"' not in page.text
    again = client.post("/network", data={"csrf_token": csrf_of(page.text), **STATIC_FORM})
    assert again.status_code == 409 and box.requests() == []


def test_engineers_only_and_csrf(box: Appliance) -> None:
    box.panel.setup()
    box.panel.add_user(*TECHNOLOGIST, Role.TECHNOLOGIST)
    tech = box.panel.login(*TECHNOLOGIST)
    assert tech.get("/network").status_code == 403
    eng = box.panel.login(*ENGINEER)
    assert eng.post("/network", data=STATIC_FORM).status_code == 403  # no CSRF token
    assert box.requests() == []


# --- the clock ----------------------------------------------------------------------------------


def banner(text: str) -> bool:
    return 'id="clock-banner"' in text and "clock is not synchronised" in text


def test_clock_banner_on_every_page_until_timesyncd_has_synced(box: Appliance) -> None:
    client = box.panel.setup()
    anonymous = box.panel.browser()
    for path in ("/network", "/account", "/queue"):
        assert banner(client.get(path).text), path
    assert banner(anonymous.get("/login").text)
    assert client.get("/api/v1/status").json()["clock"]["state"] == "unsynced"

    synced = box.root / "run/systemd/timesync/synchronized"
    synced.parent.mkdir(parents=True)
    synced.touch()
    assert not banner(client.get("/network").text)
    assert not banner(anonymous.get("/login").text)
    assert client.get("/api/v1/status").json()["clock"] == {"state": "synced", "message": ""}


def test_a_box_that_is_not_an_appliance(tmp_path: Path, make_panel: MakePanel) -> None:
    """No root side: the page shows the network and changes nothing; the clock is unknown
    (the OS keeps time its own way) until timesyncd is seen running."""
    root = tmp_path / "root"
    make_root(root, appliance=False)
    services, closers = services_for(tmp_path)
    panel = make_panel(dataclasses.replace(services, system_root=root))
    try:
        client = panel.setup()
        page = client.get("/network")
        assert "managed by its operating system" in page.text and 'id="apply"' not in page.text
        assert not banner(page.text)
        assert client.get("/api/v1/status").json()["clock"]["state"] == "unknown"
        refused = client.post("/network", data={"csrf_token": csrf_of(page.text), **STATIC_FORM})
        assert refused.status_code == 409
        (root / "run/systemd/timesync").mkdir(parents=True)  # timesyncd runs, not synced yet
        assert banner(client.get("/network").text)
    finally:
        for close in closers:
            close()


def test_the_page_sees_the_local_address_the_connection_reached(
    tmp_path: Path, make_panel: MakePanel
) -> None:
    """uvicorn's ASGI ``server`` is the socket's local address: a panel listening on every
    address shows each connection the one it reached, whatever the Host header says."""
    root = tmp_path / "root"
    make_root(root, appliance=False)
    services, closers = services_for(tmp_path, bind="0.0.0.0")
    panel = make_panel(dataclasses.replace(services, system_root=root))
    try:
        panel.setup()
        port = services.config.web.port
        trust = panel.trust()
        trust.check_hostname = False  # the self-signed certificate names the host's addresses
        assert trust.verify_mode == ssl.CERT_REQUIRED
        for address in ("127.0.0.1", "127.0.0.2"):
            client = httpx.Client(
                base_url=f"https://{address}:{port}",
                verify=trust,
                headers={"host": "forged.example"},
            )
            panel.clients.append(client)
            answer = panel.post_login(client, *ENGINEER)
            assert answer.status_code == 303, answer.text
            page = client.get("/network")
            assert f"<dt>This page came via</dt><dd>{address}</dd>" in page.text
    finally:
        for close in closers:
            close()
