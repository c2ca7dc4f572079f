"""First boot against a fake root (tests/appliance/fakebox.py): each step, each refusal, the
markers, the reports on the card, the console and the panel, and the CLI verb."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from gateway.appliance import fatimport
from gateway.appliance.firstboot import MARKERS, STEPS, Firstboot, run
from gateway.appliance.steps import (
    Step,
    StepResult,
    StepStatus,
    marker_path,
    run_steps,
)
from gateway.clock import FakeClock
from gateway.configstore import ConfigStore
from gateway.web.auth.db import PanelDb
from gateway.web.auth.setup import SetupToken, read_token
from gateway.web.auth.users import UserStore
from gateway.web.tlscert import cert_paths, generate_self_signed, pair_matches
from tests.appliance.fakebox import (
    IMAGE_DEFAULT_CONFIG,
    MACHINE_ID,
    SERIAL,
    SERVICE_ID,
    firstboot_for,
    make_box,
)

HOSTNAME = f"dicom-gateway-{SERIAL}"
ONCE = {s.name for s in STEPS if s.once}
# Two mistakes, on lines 3 and 5 of the card's file.
BAD_CONFIG = '[web]\nport = 9443\ncolour = "blue"\n[gateway]\nlog_level = "LOUD"\n'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_box(tmp_path / "root")


def statuses(fb: Firstboot) -> dict[str, StepStatus]:
    return {r.name: r.result.status for r in run(fb)}


def state(root: Path) -> Path:
    return root / "var/lib/dicom-gateway"


def snapshot(root: Path) -> dict[str, tuple[bytes | str, int, int, int]]:
    """Every name under root with its content (or link target), mode and owner."""
    out: dict[str, tuple[bytes | str, int, int, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "dev/console":  # appended to at every boot, like the real one
            continue
        st = path.lstat()
        if path.is_symlink():
            body: bytes | str = os.readlink(path)
        elif path.is_file():
            body = path.read_bytes()
        else:
            body = "dir"
        out[rel] = (body, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def owner(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def check_config_problems(path: Path) -> list[str]:
    """What `dicom-gateway check-config --config PATH` prints as config errors."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    return [
        line.removeprefix("config error: ")
        for line in done.stderr.splitlines()
        if line.startswith("config error: ")
    ]


# --- a new box -------------------------------------------------------------------------------


def test_a_new_box_gets_its_identity_configuration_certificate_token_and_console(
    root: Path,
) -> None:
    fb = firstboot_for(root)
    got = statuses(fb)
    assert got == {
        "grow-data": StepStatus.UNCHANGED,  # /data is a tmpfs here (the grow has its own tests)
        "machine-id": StepStatus.DONE,
        "serial": StepStatus.DONE,
        "default-config": StepStatus.DONE,
        "import-config": StepStatus.UNCHANGED,
        "import-network": StepStatus.UNCHANGED,
        "hostname": StepStatus.DONE,
        "panel-certificate": StepStatus.DONE,
        "setup-token": StepStatus.DONE,
        "avahi": StepStatus.DONE,
        "ssh": StepStatus.UNCHANGED,
    }
    system = root / "data/system"
    assert (system / "machine-id").read_text() == MACHINE_ID + "\n"
    assert (system / "serial").read_text() == SERIAL + "\n"
    assert (system / "hostname").read_text() == HOSTNAME + "\n"
    assert fb.host.hostname() == HOSTNAME
    # The image's default file, root:dicom-gateway 0640 (the daemon reads it through its group).
    config = root / "etc/dicom-gateway/gateway.toml"
    assert config.read_bytes() == IMAGE_DEFAULT_CONFIG.read_bytes()
    assert owner(config) == (0o640, 0, SERVICE_ID)
    # The certificate names the box as the browser reaches it, and the daemon can read the pair.
    cert, key = cert_paths(state(root))
    assert pair_matches(cert, key)
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert {HOSTNAME, f"{HOSTNAME}.local"} <= set(sans.value.get_values_for_type(x509.DNSName))
    assert owner(key) == (0o600, SERVICE_ID, SERVICE_ID)
    # The token: the panel's own (its database knows it), on the card, on the console.
    token = read_token(state(root))
    assert token is not None
    db = PanelDb.under(state(root))
    assert SetupToken(db, state(root), UserStore(db, FakeClock()), FakeClock()).check(token)
    card_token = (root / "boot/firmware/SETUP-TOKEN.txt").read_bytes().decode()
    assert token in card_token and f"https://{HOSTNAME}.local:8443" in card_token
    assert "\r\n" in card_token  # read on Windows laptops too
    console = (root / "dev/console").read_text()
    issue = (root / "run/dicom-gateway/issue").read_text()
    for text in (console, issue):
        assert token in text and f"https://{HOSTNAME}.local:8443" in text
    assert "https://\\4:8443" in issue  # agetty's escape: the address when the prompt shows
    # mDNS: _https._tcp on the panel's port with the serial.
    avahi = (root / "run/dicom-gateway/avahi.service").read_text()
    assert "<type>_https._tcp</type>" in avahi and "<port>8443</port>" in avahi
    assert f"serial={SERIAL}" in avahi and "version=12.0.0" in avahi
    # Markers for the once steps only; nothing reported (nothing on the card, nothing wrong).
    assert {p.name for p in (root / MARKERS.lstrip("/")).glob("*.done")} == {
        f"{n}.done" for n in ONCE
    }
    assert not (root / "boot/firmware/FIRSTBOOT-REPORT.txt").exists()
    assert not (state(root) / fatimport.PANEL_REPORT).exists()


def test_the_next_boot_skips_the_once_steps_and_changes_nothing(root: Path) -> None:
    run(firstboot_for(root))
    before = snapshot(root)
    got = statuses(firstboot_for(root))
    assert {n for n, s in got.items() if s is StepStatus.SKIPPED} == ONCE
    assert all(s is StepStatus.UNCHANGED for n, s in got.items() if n not in ONCE), got
    assert snapshot(root) == before


def test_a_stored_serial_is_never_derived_again(root: Path) -> None:
    run(firstboot_for(root))
    (root / MARKERS.lstrip("/") / "serial.done").unlink()
    (root / "sys/class/dmi/id/product_uuid").write_text("99999999-1111-2222-3333-444444444444\n")
    got = statuses(firstboot_for(root))
    assert got["serial"] is StepStatus.UNCHANGED
    assert (root / "data/system/serial").read_text() == SERIAL + "\n"


@pytest.mark.parametrize(
    ("devicetree", "dmi_serial", "dmi_uuid", "expected"),
    [
        ("10000000ABCDEF12\x00", None, "4C4C4544-0042", "abcdef12"),  # a Pi: last 8
        (None, "To be filled by O.E.M.", "4C4C4544-0042", "4c4c4544"),  # placeholder skipped
        (None, "00000000", "ffffffff-ffff", None),  # one repeated digit: not set
    ],
)
def test_the_serial_comes_from_the_first_usable_source(
    root: Path, devicetree: str | None, dmi_serial: str | None, dmi_uuid: str, expected: str | None
) -> None:
    (root / "sys/class/dmi/id/product_uuid").write_text(dmi_uuid)
    if dmi_serial is not None:
        (root / "sys/class/dmi/id/product_serial").write_text(dmi_serial)
    if devicetree is not None:
        tree = root / "sys/firmware/devicetree/base"
        tree.mkdir(parents=True)
        (tree / "serial-number").write_text(devicetree)
    run(firstboot_for(root))
    assert (root / "data/system/serial").read_text() == f"{expected or 'abababab'}\n"


def test_a_machine_id_not_made_yet_needs_attention_and_gets_no_marker(root: Path) -> None:
    (root / "etc/machine-id").write_text("")
    got = statuses(firstboot_for(root))
    assert got["machine-id"] is StepStatus.ATTENTION
    assert not marker_path(root / MARKERS.lstrip("/"), "machine-id").exists()
    assert "machine-id" in (root / "dev/console").read_text()


# --- the card's configuration ---------------------------------------------------------------


def test_a_valid_dicom_gateway_toml_is_imported_into_the_history_and_reported(root: Path) -> None:
    card = root / "boot/firmware/dicom-gateway.toml"
    card.write_text("[web]\nport = 9443\n")
    got = statuses(firstboot_for(root))
    assert got["import-config"] is StepStatus.DONE
    config = root / "etc/dicom-gateway/gateway.toml"
    assert config.read_text() == "[web]\nport = 9443\n"
    assert owner(config) == (0o640, 0, SERVICE_ID)
    store = ConfigStore(config, state(root), FakeClock())
    versions = store.versions()
    assert [v.actor for v in versions] == ["firstboot", "file"]  # the panel can go back
    assert store.read_version(versions[1]) == IMAGE_DEFAULT_CONFIG.read_text()
    assert not card.exists()
    retired = root / "boot/firmware/dicom-gateway.toml.imported"
    assert retired.read_text() == "[web]\nport = 9443\n"
    report = (root / "boot/firmware/FIRSTBOOT-REPORT.txt").read_text()
    assert "dicom-gateway.toml: installed as gateway.toml (configuration version 0002)" in report
    # What follows the configuration follows the imported one.
    assert "<port>9443</port>" in (root / "run/dicom-gateway/avahi.service").read_text()
    assert ":9443" in (root / "boot/firmware/SETUP-TOKEN.txt").read_text()
    # Not imported again at the next boot (the panel's later changes stand).
    assert statuses(firstboot_for(root))["import-config"] is StepStatus.UNCHANGED
    assert len(store.versions()) == 2


def test_an_invalid_dicom_gateway_toml_is_refused_as_check_config_refuses_it(root: Path) -> None:
    card = root / "boot/firmware/dicom-gateway.toml"
    card.write_text(BAD_CONFIG)
    expected = check_config_problems(card)
    assert any("line 3" in p for p in expected) and any("line 5" in p for p in expected)
    fb = firstboot_for(root)
    records = {r.name: r.result for r in run(fb)}
    refused = records["import-config"]
    assert refused.status is StepStatus.ATTENTION
    assert list(refused.details) == expected  # the same check, the same words
    # The box starts with the defaults; the card's file is left as the engineer wrote it.
    config = root / "etc/dicom-gateway/gateway.toml"
    assert config.read_bytes() == IMAGE_DEFAULT_CONFIG.read_bytes()
    assert card.read_text() == BAD_CONFIG
    # Reported on the card, the console, and for the panel, each naming key and line.
    report = (root / "boot/firmware/FIRSTBOOT-REPORT.txt").read_text()
    console = (root / "dev/console").read_text()
    issue = (root / "run/dicom-gateway/issue").read_text()
    panel = fatimport.read_panel_report(state(root))
    for problem in expected:
        assert f"config error: {problem}" in report
        assert problem in console and problem in issue
        assert any(problem in line for line in panel)
    assert "web.colour (dicom-gateway.toml line 3): unknown key" in report
    assert owner(state(root) / fatimport.PANEL_REPORT) == (0o640, 0, SERVICE_ID)
    # Still refused (and reported) at the next boot, until the file is fixed or removed.
    assert statuses(firstboot_for(root))["import-config"] is StepStatus.ATTENTION
    card.unlink()
    assert statuses(firstboot_for(root))["import-config"] is StepStatus.UNCHANGED
    assert fatimport.read_panel_report(state(root)) == []


def test_a_file_the_daemon_would_refuse_where_it_is_installed_is_refused_too(root: Path) -> None:
    # Valid beside the card (the CA is there), not as /etc/dicom-gateway/gateway.toml.
    (root / "boot/firmware/pacs-ca.pem").write_text("not checked here\n")
    (root / "boot/firmware/pacs.pem").write_text("x\n")
    (root / "boot/firmware/pacs.key").write_text("x\n")
    card = root / "boot/firmware/dicom-gateway.toml"
    card.write_text(
        '[[destination]]\nname = "pacs"\nae_title = "PACS"\nhost = "192.0.2.5"\nport = 104\n'
        '[destination.tls]\nca = "pacs-ca.pem"\ncert = "pacs.pem"\nkey = "pacs.key"\n'
    )
    records = {r.name: r.result for r in run(firstboot_for(root))}
    assert records["import-config"].status is StepStatus.ATTENTION
    assert any("file not found" in p for p in records["import-config"].details)
    config = root / "etc/dicom-gateway/gateway.toml"
    assert config.read_bytes() == IMAGE_DEFAULT_CONFIG.read_bytes()


def test_an_existing_configuration_is_not_replaced_by_the_defaults(root: Path) -> None:
    config = root / "etc/dicom-gateway/gateway.toml"
    config.write_text("[web]\nport = 8444\n")
    assert statuses(firstboot_for(root))["default-config"] is StepStatus.UNCHANGED
    assert config.read_text() == "[web]\nport = 8444\n"


# --- network.toml and the host name ----------------------------------------------------------


def test_network_toml_is_imported_and_its_host_name_used(root: Path) -> None:
    text = 'hostname = "ct-room-2"\n[interface]\nmode = "dhcp"\n'
    (root / "boot/firmware/network.toml").write_text(text)
    fb = firstboot_for(root)
    got = statuses(fb)
    assert got["import-network"] is StepStatus.DONE
    assert (root / "data/system/network.toml").read_text() == text
    assert (root / "boot/firmware/network.toml.imported").exists()
    assert (root / "data/system/hostname").read_text() == "ct-room-2\n"
    assert fb.host.hostname() == "ct-room-2"
    assert (
        "network.toml: installed as network.toml"
        in (root / "boot/firmware/FIRSTBOOT-REPORT.txt").read_text()
    )


def test_an_invalid_network_toml_is_refused_naming_key_and_line(root: Path) -> None:
    (root / "boot/firmware/network.toml").write_text(
        '[interface]\nmode = "static"\naddress = "300.1.2.3/24"\n'
    )
    records = {r.name: r.result for r in run(firstboot_for(root))}
    refused = records["import-network"]
    assert refused.status is StepStatus.ATTENTION
    assert any("interface.address (network.toml line 3)" in p for p in refused.details), refused
    assert not (root / "data/system/network.toml").exists()
    assert "network.toml line 3" in (root / "boot/firmware/FIRSTBOOT-REPORT.txt").read_text()


def test_a_host_name_the_network_settings_stored_is_kept(root: Path) -> None:
    # The name h-net's render writes (dotted, capitals: what systemd takes) stays the name.
    (root / "data/system/hostname").write_text("CT-Room-2.radiology\n")
    fb = firstboot_for(root)
    assert statuses(fb)["hostname"] is StepStatus.UNCHANGED
    assert (root / "data/system/hostname").read_text() == "CT-Room-2.radiology\n"
    assert fb.host.hostname() == "CT-Room-2.radiology"


# --- the token, the certificate, SSH, the data partition --------------------------------------


def test_the_token_leaves_the_card_once_the_panel_is_set_up(root: Path) -> None:
    run(firstboot_for(root))
    token = read_token(state(root))
    assert token is not None
    db = PanelDb.under(state(root))
    users = UserStore(db, FakeClock())
    SetupToken(db, state(root), users, FakeClock()).create_first_engineer(
        token, "eng", "a long engineer password 1"
    )
    assert users.count() == 1
    got = statuses(firstboot_for(root))
    assert got["setup-token"] is StepStatus.DONE
    assert not (root / "boot/firmware/SETUP-TOKEN.txt").exists()
    assert token not in (root / "run/dicom-gateway/issue").read_text()


def test_a_certificate_pair_cut_during_a_renewal_is_made_again(root: Path) -> None:
    import datetime

    cert, key = cert_paths(state(root))
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    generate_self_signed(cert, key, ["a"], [], now)
    stale_cert = cert.read_bytes()
    generate_self_signed(cert, key, ["b"], [], now)
    cert.write_bytes(stale_cert)  # the new key, the old certificate: what a cut leaves
    assert not pair_matches(cert, key)
    assert statuses(firstboot_for(root))["panel-certificate"] is StepStatus.DONE
    assert pair_matches(cert, key)


def test_ssh_follows_the_card_and_nothing_is_copied_off_it(root: Path) -> None:
    assert "SSH off" in _summary(root, "ssh")
    keys = root / "boot/firmware/ssh/authorized_keys"
    keys.parent.mkdir()
    keys.write_text("# engineer\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 eng@laptop\n")
    assert "SSH on for root with the 1 key(s)" in _summary(root, "ssh")
    assert not (root / "data/system/ssh").exists()
    assert not (root / "run/dicom-gateway/ssh-enabled").exists()
    keys.write_text("\n")
    assert statuses(firstboot_for(root))["ssh"] is StepStatus.ATTENTION


def _summary(root: Path, step: str) -> str:
    return {r.name: r.result.summary for r in run(firstboot_for(root))}[step]


def test_nothing_mounted_at_data_needs_attention_and_leaves_no_marker(root: Path) -> None:
    (root / "proc/self/mountinfo").write_text("")
    assert statuses(firstboot_for(root))["grow-data"] is StepStatus.ATTENTION
    assert not marker_path(root / MARKERS.lstrip("/"), "grow-data").exists()


# --- the step runner's rules ------------------------------------------------------------------


def test_the_runner_marks_once_steps_only_when_done_and_keeps_going_after_a_failure(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    def step(name: str, result: StepResult | Exception) -> Step[None]:
        def go(_: None) -> StepResult:
            calls.append(name)
            if isinstance(result, Exception):
                raise result
            return result

        return Step(name, True, go)

    steps = [
        step("ok", StepResult(StepStatus.DONE, "did it")),
        step("boom", OSError("card unreadable")),
        step("person", StepResult(StepStatus.ATTENTION, "fix me")),
        step("after", StepResult(StepStatus.UNCHANGED, "was so")),
    ]
    markers = tmp_path / "markers"
    first = run_steps(steps, None, markers)
    assert [r.result.status for r in first] == [
        StepStatus.DONE,
        StepStatus.FAILED,
        StepStatus.ATTENTION,
        StepStatus.UNCHANGED,
    ]
    assert "card unreadable" in first[1].result.summary
    assert sorted(p.name for p in markers.iterdir()) == ["after.done", "ok.done"]
    calls.clear()
    second = run_steps(steps, None, markers)
    assert calls == ["boom", "person"]  # the marked ones are not run again
    assert [r.result.status for r in second[:1]] == [StepStatus.SKIPPED]


def test_a_marker_that_cannot_be_written_fails_that_step_only(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.write_text("a file where the folder should be")
    ran: list[str] = []

    def go(name: str) -> Step[None]:
        return Step(
            name, True, lambda _: ran.append(name) or StepResult(StepStatus.DONE, f"{name} ok")
        )

    records = run_steps([go("a"), go("b")], None, markers)
    assert ran == ["a", "b"]
    assert all(r.result.status is StepStatus.FAILED for r in records)
    assert "marker was not written" in records[0].result.summary


def test_a_power_cut_stops_the_steps_and_writes_no_marker(tmp_path: Path) -> None:
    class Cut(BaseException):
        pass

    def cut(_: None) -> StepResult:
        raise Cut

    with pytest.raises(Cut):
        run_steps([Step("cut", True, cut)], None, tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --- the CLI verb ------------------------------------------------------------------------------


def run_cli(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "appliance", "firstboot", "--root", str(root), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_cli_runs_the_steps_on_a_fake_root_and_says_when_a_person_must_act(
    root: Path,
) -> None:
    done = run_cli(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "setup-token" in done.stdout and "done" in done.stdout
    token = read_token(state(root))
    assert token is not None and token not in done.stdout  # the journal never sees it
    (root / "boot/firmware/dicom-gateway.toml").write_text(BAD_CONFIG)
    done = run_cli(root)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "config error: web.colour (dicom-gateway.toml line 3): unknown key" in done.stdout
    assert json.loads((state(root) / fatimport.PANEL_REPORT).read_text())["problems"]


def test_the_early_run_gives_the_network_render_its_files_and_the_full_run_reports_them(
    root: Path,
) -> None:
    """dicom-gateway-network.service runs ``--early`` in sysinit, before the full first boot:
    the serial and the card's network.toml must be there for its render, and nothing else is
    done yet (no certificate, token or report); the full run later reports the import and
    retires the card's copy, as when it imported it itself."""
    text = 'hostname = "ct-room-2"\n[interface]\nmode = "dhcp"\n'
    card = root / "boot/firmware/network.toml"
    card.write_text(text)
    done = run_cli(root, "--early")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "data/system/network.toml").read_text() == text
    assert (root / "data/system/serial").read_text() == f"{SERIAL}\n"
    assert card.exists()  # retired only once reported, by the full run
    assert not (root / "boot/firmware/FIRSTBOOT-REPORT.txt").exists()
    assert read_token(state(root)) is None
    assert not cert_paths(state(root))[0].exists()
    assert {line.split()[0] for line in done.stdout.splitlines()} == {"serial", "import-network"}

    done = run_cli(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serial             skipped" in done.stdout
    assert (root / "data/system/hostname").read_text() == "ct-room-2\n"
    assert not card.exists() and (root / "boot/firmware/network.toml.imported").exists()
    assert (
        "network.toml: installed as network.toml"
        in (root / "boot/firmware/FIRSTBOOT-REPORT.txt").read_text()
    )
