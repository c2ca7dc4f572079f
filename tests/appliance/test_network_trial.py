"""The trial against a fake root and a fake runner: confirm in time, deadline, restart, address."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.appliance.netspool import handle_requests, submit
from gateway.appliance.nettrial import NetworkKeeper, read_status
from gateway.appliance.network import parse_network
from gateway.clock import FakeClock
from gateway.config import ConfigError
from tests.appliance.netfakes import FakeRunner

OLD = '[interface]\nmode = "static"\naddress = "192.0.2.10/24"\ngateway = "192.0.2.1"\n'
NEW = '[interface]\nmode = "static"\naddress = "198.51.100.7/24"\ngateway = "198.51.100.1"\n'


class Box:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = FakeClock()
        self.runner = FakeRunner()
        self.boot = "boot-1"
        (root / "data/system").mkdir(parents=True)
        (root / "data/system/network.toml").write_text(OLD)
        (root / "sys/class/net/eth0").mkdir(parents=True)

    def keeper(self) -> NetworkKeeper:
        return NetworkKeeper(self.root, self.runner, self.clock, lambda: self.boot)

    def rendered(self) -> str:
        return (self.root / "run/systemd/network/10-dicom-gateway.network").read_text()


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def test_confirm_in_time_from_the_new_address_makes_it_the_applied_one(box: Box) -> None:
    status = box.keeper().apply(NEW, "web:eng", 120)
    assert status.state == "pending" and status.trial is not None
    assert "Address=198.51.100.7/24" in box.rendered()
    assert ("networkctl", "reload") in box.runner.commands
    assert ("networkctl", "reconfigure", "eth0") in box.runner.commands
    # The applied file is untouched during the trial.
    assert (box.root / "data/system/network.toml").read_text() == OLD
    box.clock.advance(100)
    done = box.keeper().confirm(status.trial.trial_id, "198.51.100.7")
    assert done.state == "confirmed"
    assert (box.root / "data/system/network.toml").read_text() == NEW
    assert not (box.root / "data/system/network.pending.toml").exists()
    box.clock.advance(1000)
    assert box.keeper().rollback_due() is None
    assert "Address=198.51.100.7/24" in box.rendered()


def test_deadline_passes_previous_settings_restored(box: Box) -> None:
    status = box.keeper().apply(NEW, "web:eng", 120)
    assert status.trial is not None
    box.clock.advance(119)
    assert box.keeper().rollback_due() is None
    box.clock.advance(1)
    done = box.keeper().rollback_due()
    assert done is not None and done.state == "rolled_back"
    assert done.message == "network change rolled back: not confirmed within 120 s"
    assert "Address=192.0.2.10/24" in box.rendered()
    assert not (box.root / "data/system/network.pending.toml").exists()
    assert read_status(box.keeper().spool_dir) == done
    # A late confirmation does not bring the change back.
    late = box.keeper().confirm(status.trial.trial_id, "198.51.100.7")
    assert late.state == "refused"
    assert (box.root / "data/system/network.toml").read_text() == OLD


def test_restart_during_the_trial_restores_the_old_settings_at_boot(box: Box) -> None:
    status = box.keeper().apply(NEW, "web:eng", 120)
    assert status.trial is not None
    box.boot = "boot-2"  # power cut: a new boot, the monotonic clock starts again
    box.clock = FakeClock()
    done = box.keeper().boot()
    assert done.state == "rolled_back" and "restarted" in done.message
    assert "Address=192.0.2.10/24" in box.rendered()
    assert not (box.root / "data/system/network.trial.json").exists()


def test_confirm_from_the_old_address_does_not_count(box: Box) -> None:
    status = box.keeper().apply(NEW, "web:eng", 120)
    assert status.trial is not None
    refused = box.keeper().confirm(status.trial.trial_id, "192.0.2.10")
    assert refused.state == "pending" and "198.51.100.7" in refused.message
    assert (box.root / "data/system/network.toml").read_text() == OLD
    box.clock.advance(120)
    done = box.keeper().rollback_due()
    assert done is not None and done.state == "rolled_back"


def test_dhcp_trial_counts_a_confirmation_at_the_leased_address(box: Box) -> None:
    status = box.keeper().apply('[interface]\nmode = "dhcp"\n', "web:eng", 60)
    assert status.trial is not None
    links = box.root / "run/systemd/netif/links"
    links.mkdir(parents=True)
    (links / "2").write_text("ADMIN_STATE=configured\nDHCP4_ADDRESS=203.0.113.40\n")
    assert box.keeper().confirm(status.trial.trial_id, "192.0.2.10").state == "pending"
    assert box.keeper().confirm(status.trial.trial_id, "::ffff:203.0.113.40").state == "confirmed"


def test_second_apply_during_a_trial_is_refused(box: Box) -> None:
    assert box.keeper().apply(NEW, "web:eng", 120).state == "pending"
    assert box.keeper().apply(OLD, "web:eng", 120).state == "refused"


def test_apply_cut_short_before_the_trial_record_is_rolled_back(box: Box) -> None:
    (box.root / "data/system/network.pending.toml").write_text(NEW)
    done = box.keeper().rollback_due()
    assert done is not None and done.state == "rolled_back"
    assert "Address=192.0.2.10/24" in box.rendered()


def test_confirm_cut_short_after_the_rename_is_finished_not_rolled_back(box: Box) -> None:
    status = box.keeper().apply(NEW, "web:eng", 120)
    assert status.trial is not None
    system = box.root / "data/system"
    (system / "network.pending.toml").replace(system / "network.toml")
    done = box.keeper().rollback_due()
    assert done is not None and done.state == "confirmed"
    assert (system / "network.toml").read_text() == NEW


def test_requests_through_the_spool_and_a_symlink_is_refused(box: Box) -> None:
    keeper = box.keeper()
    spool = keeper.spool_dir
    submit(spool, "apply", {"actor": "web:eng", "toml": NEW, "seconds": 120})
    (spool / "requests/0-evil.json").symlink_to(box.root / "data/system/network.toml")
    outcomes = handle_requests(keeper)
    assert [o.state for o in outcomes] == ["refused", "pending"]
    assert "not open" in outcomes[0].message or "cannot open" in outcomes[0].message
    assert list((spool / "requests").iterdir()) == []
    trial = outcomes[1].trial
    assert trial is not None
    submit(spool, "confirm", {"actor": "web:eng", "trial": trial.trial_id, "via": "198.51.100.7"})
    assert [o.state for o in handle_requests(keeper)] == ["confirmed"]


def test_invalid_request_toml_is_refused_with_key_and_line(box: Box) -> None:
    bad = '[interface]\nmode = "static"\naddress = "198.51.100.0/24"\n'
    status = box.keeper().apply(bad, "web:eng", 120)
    assert status.state == "refused"
    assert any("interface.address" in p and "line 3" in p for p in status.problems)
    assert not (box.root / "data/system/network.pending.toml").exists()
    assert box.runner.commands == []


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[interface]\nmode = "static"\naddress = "192.0.2.10"\n', "interface.address", "prefix"),
        (
            '[interface]\nmode = "static"\naddress = "192.0.2.255/24"\n',
            "interface.address",
            "broadcast",
        ),
        (
            '[interface]\nmode = "static"\naddress = "127.0.0.2/8"\n',
            "interface.address",
            "loopback",
        ),
        (
            '[interface]\nmode = "static"\naddress = "192.0.2.10/24"\ngateway = "192.0.3.1"\n',
            "interface",
            "subnet",
        ),
        ('[interface]\nmode = "static"\n', "interface", "needs address"),
        ('[interface]\naddress = "192.0.2.10/24"\n', "interface", "only for"),
        ('hostname = "ct_room_2"\n', "hostname", "host name"),
        (
            '[interface]\ndomains = ["a.example\\n[Network]"]\n',
            "interface.domains",
            "not a DNS domain",
        ),
        ('[interface]\ndns = ["dns.example"]\n', "interface.dns", "not an IP address"),
        ('[time]\nntp = ["ntp example"]\n', "time.ntp", "neither"),
        ('[interface]\nmode = "DHCP"\n', "interface.mode", ""),
        ('[interfaces]\nmode = "dhcp"\n', "interfaces", "unknown key"),
    ],
)
def test_real_mistakes_name_the_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_network(text)
    assert any(
        p.startswith(key + " (network.toml") and words in p for p in caught.value.problems
    ), caught.value.problems


TIMER_START = ("systemctl", "start", "dicom-gateway-network-rollback.timer")


def test_no_change_without_a_running_rollback_timer(box: Box) -> None:
    box.keeper().boot()
    before = box.rendered()
    box.runner.failing.add(TIMER_START)
    status = box.keeper().apply(NEW, "web:eng", 120)
    assert status.state == "failed" and "rollback timer did not start" in status.message
    # Nothing was reloaded and nothing is left on trial: the old settings stay in force.
    assert box.rendered() == before
    assert ("networkctl", "reload") not in box.runner.commands
    assert not box.keeper().on_trial()


def test_the_timer_runs_before_the_new_settings_are_loaded(box: Box) -> None:
    box.keeper().apply(NEW, "web:eng", 120)
    commands = box.runner.commands
    assert commands.index(TIMER_START) < commands.index(("networkctl", "reload"))


def test_revert_rolls_back_at_once_from_any_address(box: Box) -> None:
    status = box.keeper().apply(NEW, "web:eng", 120)
    assert status.trial is not None
    assert box.keeper().revert("not-the-trial", "web:eng").state == "pending"
    spool = box.keeper().spool_dir
    submit(spool, "revert", {"actor": "web:eng", "trial": status.trial.trial_id})
    [done] = handle_requests(box.keeper())
    assert done.state == "rolled_back" and done.message.endswith("reverted by web:eng")
    assert "Address=192.0.2.10/24" in box.rendered()
    assert (box.root / "data/system/network.toml").read_text() == OLD


def test_a_planted_directory_request_is_taken_out_of_the_glob(box: Box) -> None:
    spool = box.keeper().spool_dir / "requests"
    spool.mkdir(parents=True)
    (spool / "1-dir.json").mkdir()
    (spool / "2-full.json").mkdir()
    (spool / "2-full.json/x").write_text("{}")
    outcomes = handle_requests(box.keeper())
    assert [o.state for o in outcomes] == ["refused", "refused"]
    # Nothing is left that the path unit's *.json glob (glob(3): no dot names) would match.
    assert sorted(spool.glob("*.json")) == []
