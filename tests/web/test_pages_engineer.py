"""The engineer screens through the panel over real HTTPS on loopback: destinations (C-ECHO
against DCMTK storescp over TLS), configuration (validate, apply, history, diff), certificates,
ingest monitor, support."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import ssl
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from gateway import configstore
from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import FakeClock, SystemClock
from gateway.config import load_config
from gateway.ingest.serial.astm_frames import build_frame
from gateway.ingest.serial.port import SerialPort
from gateway.ingest.serial.reader import SerialReader
from gateway.spool.store import Spool
from gateway.web.app import create_web_app
from gateway.web.auth import PanelAuth, Role, open_auth
from gateway.web.services import WebServices
from gateway.worklist.cache import WorklistCache
from gateway.worklist.reconcile import Reconciler
from tests.conftest import Pki
from tests.ingest.serial.test_port import FakeOpener, serial_config
from tests.peers import StoreSCP, free_port

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "violet harbour lantern"  # not on the common list (xkcd's is)


def config_text(pki: Pki, pacs_port: int) -> str:
    return f"""\
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "localhost"
port = {pacs_port}
connect_timeout = 3.0
acse_timeout = 5.0
[destination.tls]
ca = "{pki.ca}"
cert = "{pki.gateway.cert}"
key = "{pki.gateway.key}"
"""


@dataclass
class Panel:
    """The panel over a real config file, spool and audit log; restarts are recorded."""

    root: Path
    app: FastAPI
    services: WebServices
    restarts: list[int]
    base_url: str
    tls: ssl.SSLContext
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def auth(self) -> PanelAuth:
        auth = self.app.state.auth
        assert isinstance(auth, PanelAuth)
        return auth

    def client(self, role: Role | None = Role.ENGINEER) -> httpx.Client:
        """A browser, logged in through /login as a user of ``role`` (None: no session)."""
        client = httpx.Client(base_url=self.base_url, verify=self.tls, follow_redirects=False)
        self.clients.append(client)
        if role is not None:
            name = f"{role.value[:4]}{len(self.clients)}"
            self.auth.users.create(name, PASSWORD, role)
            page = client.get("/login")
            answer = client.post(
                "/login",
                data={"username": name, "password": PASSWORD, "csrf_token": token(page.text)},
            )
            assert answer.status_code == 303, answer.text
        return client

    def audit(self, action: str) -> list[dict[str, Any]]:
        lines = (self.services.state_dir / AUDIT_FILE).read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["action"] == action]


def token(html: str) -> str:
    found = _TOKEN.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def post(client: httpx.Client, page: str, action: str, data: dict[str, str]) -> Any:
    """Open ``page`` for its CSRF token, then post the form to ``action``."""
    shown = client.get(page)
    assert shown.status_code == 200, shown.text
    return client.post(action, data={**data, "csrf_token": token(shown.text)})


MakePanel = Callable[..., Panel]


@pytest.fixture
def make_panel(tmp_path: Path, pki: Pki) -> Iterator[MakePanel]:
    closers: list[Callable[[], None]] = []
    panels: list[Panel] = []

    def make(pacs_port: int | None = None, serial: SerialReader | None = None) -> Panel:
        path = tmp_path / "gateway.toml"
        path.write_text(config_text(pki, pacs_port or free_port()))
        config = load_config(path)
        clock = SystemClock()
        state = config.gateway.state_dir
        spool = Spool(state, ["pacs"], 1 << 30, clock)
        spool.open()
        closers.append(spool.close)
        cache = WorklistCache(state / "worklist.sqlite", clock)
        cache.open()
        closers.append(cache.close)
        audit = AuditLog(state / AUDIT_FILE, clock)
        restarts: list[int] = []
        services = WebServices(
            config_path=path,
            config=config,
            credentials_dir=None,
            clock=clock,
            started_at=clock.now(),
            version="test",
            spool=spool,
            reconciler=Reconciler(spool, cache, audit, spool.staging_dir, clock),
            audit=audit,
            serial_readers={"dev": serial} if serial is not None else {},
            request_restart=lambda: restarts.append(1),
        )
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        auth = open_auth(state, config.web, clock, hasher)
        app = create_web_app(services, auth)
        base_url, stop = serve_https(app, pki)
        closers.append(stop)
        tls = ssl.create_default_context(cafile=str(pki.ca))
        panel = Panel(tmp_path, app, services, restarts, base_url, tls)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        for client in panel.clients:
            client.close()
    for close in reversed(closers):
        close()


def serve_https(app: FastAPI, pki: Pki) -> tuple[str, Callable[[], None]]:
    """The app over HTTPS on a free loopback port; returns its URL and a stop function."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(pki.gateway.cert),
            ssl_keyfile=str(pki.gateway.key),
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="test-panel", daemon=True)
    thread.start()
    waiting = threading.Event()
    while thread.is_alive() and not server.started:
        waiting.wait(0.02)
    assert server.started, "the panel did not start"

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"https://localhost:{port}", stop


@pytest.fixture
def panel(make_panel: MakePanel) -> Panel:
    return make_panel()


# -- access ----------------------------------------------------------------------------------------

ENGINEER_PAGES = (
    "/destinations",
    "/destinations/new",
    "/config",
    "/certificates",
    "/ingest",
    "/support",
)


def test_engineer_screens_need_a_session_and_the_engineer_role(panel: Panel) -> None:
    anonymous = panel.client(None)
    technologist = panel.client(Role.TECHNOLOGIST)
    engineer = panel.client(Role.ENGINEER)
    for page in ENGINEER_PAGES:
        assert anonymous.get(page).headers["location"] == "/login"
        assert technologist.get(page).status_code == 403
        assert engineer.get(page).status_code == 200, page
    refused = technologist.post("/support/bundle", data={"csrf_token": "x"})
    assert refused.status_code == 403


def test_a_forged_csrf_token_changes_nothing(panel: Panel) -> None:
    engineer = panel.client()
    before = panel.services.config_path.read_text()
    answer = engineer.post(
        "/config/raw", data={"toml": "[gateway]\n", "action": "apply", "csrf_token": "forged"}
    )
    assert answer.status_code == 403
    assert panel.services.config_path.read_text() == before
    assert panel.restarts == []


# -- destinations ----------------------------------------------------------------------------------


@pytest.mark.peers
def test_testing_a_destination_shows_tls_version_cipher_and_pacs_certificate(
    make_panel: MakePanel, pki: Pki, storescp_factory: type[StoreSCP], tmp_path: Path
) -> None:
    pacs = storescp_factory(tmp_path / "pacs", tls=(pki.ca, pki.pacs.cert, pki.pacs.key)).start()
    panel = make_panel(pacs.port)
    engineer = panel.client()
    page = post(engineer, "/destinations", "/destinations/pacs/test", {})
    assert page.status_code == 200
    assert 'Test of pacs: <span class="ok">succeeded' in page.text
    assert re.search(r'class="echo-tls">TLSv1\.[23]<', page.text)
    assert "CN=PACS" in page.text
    assert "EDGE_GW → PACS" in page.text


def test_a_failed_test_says_exactly_why(panel: Panel) -> None:
    page = post(panel.client(), "/destinations", "/destinations/pacs/test", {})
    assert 'Test of pacs: <span class="bad">failed' in page.text
    reason = re.search(r'class="echo-reason">([^<]+)<', page.text)
    assert reason is not None and "refused" in reason.group(1).lower()


@pytest.mark.peers
def test_unsaved_form_values_can_be_tested_before_saving(
    panel: Panel, pki: Pki, storescp_factory: type[StoreSCP], tmp_path: Path
) -> None:
    pacs = storescp_factory(tmp_path / "pacs2", ae_title="ARCHIVE").start()
    before = panel.services.config_path.read_text()
    form = {
        "original": "",
        "name": "archive",
        "ae_title": "ARCHIVE",
        "host": "127.0.0.1",
        "port": str(pacs.port),
        "connect_timeout": "3",
        "action": "test",
    }
    page = post(panel.client(), "/destinations/new", "/destinations/save", form)
    assert page.status_code == 200
    assert 'Test of archive: <span class="ok">succeeded' in page.text
    assert panel.services.config_path.read_text() == before  # a test saves nothing


def test_adding_a_destination_applies_the_config_with_a_trial_and_audit(panel: Panel) -> None:
    form = {
        "original": "",
        "name": "archive",
        "ae_title": "ARCHIVE",
        "host": "127.0.0.1",
        "port": "1104",
        "connect_timeout": "10",
        "action": "save",
    }
    answer = post(panel.client(), "/destinations/new", "/destinations/save", form)
    assert answer.status_code == 303, answer.text
    config = load_config(panel.services.config_path)
    assert [d.name for d in config.destination] == ["pacs", "archive"]
    assert config.destination[0].tls is not None  # the edit kept the other destination whole
    assert panel.restarts == [1]
    assert configstore.read_marker(panel.services.config_path) is not None
    (applied,) = panel.audit("config.apply")
    assert applied["actor"].startswith("web:engi")
    assert applied["details"]["comment"] == "destination archive added"


def test_an_invalid_destination_is_refused_with_key_and_line(panel: Panel) -> None:
    before = panel.services.config_path.read_text()
    form = {
        "original": "pacs",
        "name": "pacs",
        "ae_title": "PACS",
        "host": "h",
        "port": "0",
        "connect_timeout": "3",
        "use_tls": "on",
        "ca": "missing.pem",
        "cert": "c",
        "key": "k",
        "action": "save",
    }
    page = post(panel.client(), "/destinations/pacs/edit", "/destinations/save", form)
    assert page.status_code == 422
    assert re.search(r"destination\[0\]\.port \(gateway\.toml line \d+\)", page.text)
    assert panel.services.config_path.read_text() == before
    assert panel.restarts == []


def test_removing_a_destination_needs_confirmation(panel: Panel) -> None:
    engineer = panel.client()
    page = post(engineer, "/destinations", "/destinations/pacs/remove", {})
    assert page.status_code == 422
    answer = post(engineer, "/destinations", "/destinations/pacs/remove", {"confirm": "yes"})
    assert answer.status_code == 303
    assert load_config(panel.services.config_path).destination == []


# -- configuration ---------------------------------------------------------------------------------


def test_the_config_screen_has_forms_from_the_model_and_the_raw_file(panel: Panel) -> None:
    page = panel.client().get("/config")
    assert 'action="/config/section/gateway"' in page.text
    assert "Our AE title (calling AE title towards the PACS)." in page.text  # description
    assert '<option value="WARNING">' in page.text  # a Literal becomes a choice
    assert "[[destination]]" in page.text  # the raw editor holds the file


def test_validate_shows_problems_with_lines_and_saves_nothing(panel: Panel) -> None:
    engineer = panel.client()
    text = panel.services.config_path.read_text().replace('ae_title = "PACS"', "ae_title = 5")
    page = post(engineer, "/config", "/config/raw", {"toml": text, "action": "validate"})
    assert page.status_code == 422
    assert "destination[0].ae_title (gateway.toml line 7)" in page.text
    good = post(
        engineer,
        "/config",
        "/config/raw",
        {"toml": panel.services.config_path.read_text(), "action": "validate"},
    )
    assert "Valid: nothing was saved yet." in good.text
    assert panel.restarts == []


def test_a_section_form_applies_and_the_history_shows_the_diff(panel: Panel) -> None:
    engineer = panel.client()
    answer = post(
        engineer,
        "/config",
        "/config/section/modality",
        {"modality": "US", "manufacturer": "Acme", "comment": "room 3 scanner"},
    )
    assert answer.status_code == 303, answer.text
    config = load_config(panel.services.config_path)
    assert (config.modality.modality, config.modality.manufacturer) == ("US", "Acme")
    assert config.gateway.ae_title == "EDGE_GW"
    history = engineer.get("/config")
    assert 'href="/config/history/0002"' in history.text and "room 3 scanner" in history.text
    version = engineer.get("/config/history/0002")
    assert "+modality = &#34;US&#34;" in version.text or '+modality = "US"' in version.text
    download = engineer.get("/config/download")
    assert download.headers["content-disposition"].startswith('attachment; filename="gateway-')
    assert 'manufacturer = "Acme"' in download.text


def test_a_section_not_configured_yet_is_added_from_its_form(panel: Panel) -> None:
    """The worklist is set up in the browser, not by typing a [worklist] table: an absent
    section shows its (empty) form, and saving it adds the section."""
    engineer = panel.client()
    assert load_config(panel.services.config_path).worklist is None
    page = engineer.get("/config")
    assert 'action="/config/section/worklist"' in page.text
    assert "Add [worklist]" in page.text
    missing = post(engineer, "/config", "/config/section/worklist", {"host": "ris.example"})
    assert missing.status_code == 422  # required keys named, nothing saved
    assert "worklist.ae_title" in missing.text
    assert load_config(panel.services.config_path).worklist is None
    answer = post(
        engineer,
        "/config",
        "/config/section/worklist",
        {"ae_title": "RIS", "host": "ris.example", "port": "104"},
    )
    assert answer.status_code == 303, answer.text
    worklist = load_config(panel.services.config_path).worklist
    assert worklist is not None and (worklist.ae_title, worklist.port) == ("RIS", 104)


def test_restoring_a_version_applies_it_again(panel: Panel) -> None:
    engineer = panel.client()
    original = panel.services.config_path.read_text()
    post(engineer, "/config", "/config/section/modality", {"modality": "US"})
    answer = post(engineer, "/config/history/0001", "/config/history/0001/restore", {})
    assert answer.status_code == 303
    assert panel.services.config_path.read_text() == original
    assert panel.restarts == [1, 1]


# -- certificates ----------------------------------------------------------------------------------


def sign_csr(csr_pem: bytes, days: int = 365) -> tuple[str, str]:
    """A CA that signs the CSR: (certificate PEM, CA PEM)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    csr = x509.load_pem_x509_csr(csr_pem)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(name)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return cert.public_bytes(pem).decode(), ca.public_bytes(pem).decode()


def test_key_and_csr_are_made_on_the_box_and_the_signed_certificate_installed(
    panel: Panel, pki: Pki
) -> None:
    engineer = panel.client()
    answer = post(
        engineer,
        "/certificates",
        "/certificates/generate",
        {"name": "gateway", "common_name": "EDGE_GW", "hosts": "edge.example.org, 10.0.0.5"},
    )
    assert answer.status_code == 303, answer.text
    key = panel.services.state_dir / "tls" / "gateway.key"
    assert key.stat().st_mode & 0o777 == 0o600
    csr = engineer.get("/certificates/gateway/csr")
    assert csr.content.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")
    assert b"PRIVATE KEY" not in csr.content
    page = engineer.get("/certificates")
    assert "PRIVATE KEY" not in page.text
    assert "destination pacs: our certificate" in page.text and "CN=EDGE_GW" in page.text

    cert_pem, ca_pem = sign_csr(csr.content, days=20)
    # A certificate for another key, and one that does not chain to the bundle, are refused.
    other = post(
        engineer,
        "/certificates",
        "/certificates/gateway/install",
        {"cert": pki.pacs.cert.read_text(), "ca": ca_pem},
    )
    assert other.status_code == 422 and "does not belong to the key gateway" in other.text
    _, wrong_ca = sign_csr(csr.content)
    unchained = post(
        engineer,
        "/certificates",
        "/certificates/gateway/install",
        {"cert": cert_pem, "ca": wrong_ca},
    )
    assert unchained.status_code == 422 and "does not chain to the CA bundle" in unchained.text
    good = post(
        engineer, "/certificates", "/certificates/gateway/install", {"cert": cert_pem, "ca": ca_pem}
    )
    assert good.status_code == 303, good.text
    page = engineer.get("/certificates")
    assert "renew soon" in page.text  # 20 days left
    assert [r["target"] for r in panel.audit("tls.install_certificate")] == ["tls:gateway"]


def test_a_second_key_of_the_same_name_is_refused(panel: Panel) -> None:
    engineer = panel.client()
    form = {"name": "gw", "common_name": "EDGE_GW", "hosts": ""}
    assert post(engineer, "/certificates", "/certificates/generate", form).status_code == 303
    again = post(engineer, "/certificates", "/certificates/generate", form)
    assert again.status_code == 422 and "exists already" in again.text


# -- ingest ----------------------------------------------------------------------------------------


def test_the_serial_monitor_feeds_framing_events_and_no_frame_text(make_panel: MakePanel) -> None:
    clock = FakeClock()
    opener = FakeOpener()
    reader = SerialReader(
        source="dev",
        port=SerialPort(serial_config(), clock, logging.getLogger("t.port"), opener),
        engine_factory=lambda: None,  # type: ignore[arg-type,return-value]
        sink=lambda message: True,
        clock=clock,
        logger=logging.getLogger("t.reader"),
    )
    reader.monitor.record("in", b"\x05")
    reader.monitor.record("out", b"\x06")
    reader.monitor.record("in", build_frame(1, b"P|1||PID-SECRET||Doe^Secret\r", True))
    panel = make_panel(serial=reader)
    engineer = panel.client()
    assert 'data-source="/ingest/serial/dev/events"' in engineer.get("/ingest/serial/dev").text
    body = engineer.get("/ingest/serial/dev/events").json()
    assert [(e["direction"], e["kind"]) for e in body["events"]] == [
        ("in", "ENQ"),
        ("out", "ACK"),
        ("in", "frame"),
    ]
    assert body["events"][2]["checksum_ok"] is True and body["events"][2]["frame_number"] == 1
    assert "SECRET" not in json.dumps(body)
    later = engineer.get("/ingest/serial/dev/events", params={"after": 2}).json()
    assert [e["seq"] for e in later["events"]] == [3]
    assert engineer.get("/ingest/serial/nope/events").status_code == 404


# -- support ---------------------------------------------------------------------------------------


def test_the_support_bundle_downloads_as_a_zip_and_is_audited(panel: Panel) -> None:
    engineer = panel.client()
    page = engineer.get("/support")
    assert "Download the support bundle" in page.text
    answer = post(engineer, "/support", "/support/bundle", {})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        names = [n.split("/", 1)[1] for n in archive.namelist()]
    assert "queue.json" in names and "config/gateway.toml" in names
    assert len(panel.audit("support.bundle")) == 1
