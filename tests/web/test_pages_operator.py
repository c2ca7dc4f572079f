"""The operator screens: dashboard, worklist, held objects and queue.

View helpers are tested alone; the screens are tested through the panel app over a real Spool,
WorklistCache, RoomSelection, Reconciler and AuditLog in a tmp state dir.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from gateway.audit import AUDIT_FILE
from gateway.clock import FakeClock
from gateway.config import FolderIngest, GatewayConfig
from gateway.convert.converter import Converter
from gateway.identity import PatientIdentity
from gateway.ingest.folder import FolderWatcher
from gateway.ingest.items import RawItem
from gateway.ingest.serial.port import SerialPort
from gateway.ingest.serial.reader import SerialReader
from gateway.spool.entries import (
    DeliveryState,
    DestinationStats,
    EnqueueResult,
    ObjectSource,
    SourceChannel,
)
from gateway.spool.store import Spool
from gateway.web.app import create_web_app
from gateway.web.auth import PanelAuth, Role, open_auth
from gateway.web.pages import held as held_page
from gateway.web.pages import queue as queue_page
from gateway.web.server import WebServer, panel_ssl_context
from gateway.web.services import WebServices
from gateway.web.views import (
    ago,
    destination_view,
    dicom_date,
    dicom_time,
    duration,
    item_view,
    person_name,
    scheduled_at,
    size_text,
    status_text,
)
from gateway.worklist.binding import HELD_NO_IDENTITY, Binding
from gateway.worklist.cache import WorklistCache
from gateway.worklist.item import WorklistItem
from gateway.worklist.selection import RoomSelection
from tests.conftest import Pki
from tests.convert.builders import assert_valid_dicom, gray_image
from tests.convert.conftest import MTIME
from tests.ingest.serial.test_port import FakeOpener, serial_config
from tests.ingest.serial.test_reader import LineEngine
from tests.peers import free_port
from tests.web.conftest import ITEM, ITEMS, OTHER, TODAY_DA, open_parts, ris_settings
from tests.worklist.conftest import MakeRis
from tests.worklist.factory import make_item, mwl_dataset

NOW = 1_700_000_000.0


# -- view helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600 + 5 * 60, "1 h 05 min"),
        (47 * 3600, "47 h 00 min"),
        (50 * 3600, "2 d 2 h"),
        (-5, "0 s"),
    ],
)
def test_durations_read_as_a_person_would_say_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ago_says_when_in_both_directions_and_never_for_none() -> None:
    assert ago(NOW, NOW - 300) == "5 min ago"
    assert ago(NOW, NOW + 1200) == "in 20 min"
    assert ago(NOW, None) == "never"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (5 << 20, "5.0 MiB"),
        (3 << 40, "3072.0 GiB"),
    ],
)
def test_sizes_use_binary_units(n: int, text: str) -> None:
    assert size_text(n) == text


def test_a_dimse_status_is_shown_as_dicom_writes_it() -> None:
    assert status_text(0xA700) == "0xA700"
    assert status_text(0x0122) == "0x0122"
    assert status_text(None) == ""


def test_dicom_dates_times_and_names_are_made_readable() -> None:
    assert dicom_date("20240105") == "2024-01-05"
    assert dicom_date("") == ""
    assert dicom_time("093000.123") == "09:30"
    assert dicom_time("") == ""
    assert person_name("Doe^Jane") == "Doe, Jane"
    assert person_name("Doe^Jane^Mary^^Dr") == "Doe, Jane Mary Dr"
    assert person_name("Yamada^Tarou=山田^太郎") == "Yamada, Tarou"
    assert person_name("Plain") == "Plain"


def test_a_scheduled_start_is_the_local_time_of_its_date_and_time() -> None:
    expected = datetime.datetime(2024, 1, 5, 9, 30).timestamp()
    assert scheduled_at("20240105", "093000") == expected
    assert scheduled_at("20240105", "") == datetime.datetime(2024, 1, 5).timestamp()
    assert scheduled_at("", "0930") is None
    assert scheduled_at("20241305", "0930") is None


def test_a_worklist_item_view_says_when_it_starts_and_whether_it_is_selected() -> None:
    item = make_item(start_date="20240105", start_time="093000")
    start = datetime.datetime(2024, 1, 5, 9, 30).timestamp()
    view = item_view(item, start - 600, item.key)
    assert view.scheduled == "2024-01-05 09:30"
    assert view.starts == "in 10 min"
    assert view.selected
    assert view.patient_name == "Doe, Jane"
    assert view.procedure == "Abdomen"
    assert not item_view(item, start + 7200, None).selected
    assert item_view(item, start + 7200, None).starts == "2 h 00 min ago"


def test_a_destination_view_counts_waiting_and_failed_and_ages_the_oldest() -> None:
    counts = dict.fromkeys(DeliveryState, 0)
    counts |= {DeliveryState.PENDING: 3, DeliveryState.HELD: 1, DeliveryState.FAILED: 2}
    stats = DestinationStats(
        destination="pacs",
        configured=True,
        counts=counts,
        oldest_pending_at=NOW - 900,
        bytes_pending=2048,
        last_success_at=None,
        last_error="association rejected",
        last_error_at=NOW - 60,
    )
    view = destination_view(stats, NOW)
    assert (view.depth, view.failed) == (4, 2)
    assert view.oldest_waiting == "15 min"
    assert view.bytes_pending == "2.0 KiB"
    assert view.last_success == "never"
    assert view.last_error_at == "1 min ago"
    assert dict(view.counts)["pending"] == 3


# -- the screens through the panel app ---------------------------------------------------------

PASSWORD = "violet harbour lantern"  # not on the common list (xkcd's is)
SCRIPT_NAME = "<script>alert(1)</script>"
HOSTILE = make_item(
    patient_name=SCRIPT_NAME,
    patient_id="PIDX<b>",
    accession_number="ACCX",
    study_instance_uid="1.2.826.0.1.3680043.10.1.90",
    step_id="SPSX",
    start_date=TODAY_DA,
    start_time="120000",
)
PATIENT_VALUES = ("PID001", "PID002", "Doe", "Jane", "Müller", "ACC001", "ACC002", "PIDX", "ACCX")
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Panel:
    """The panel app over a real spool, worklist cache, selection and audit log."""

    state: Path
    app: FastAPI
    services: WebServices
    spool: Spool
    cache: WorklistCache
    selection: RoomSelection
    converter: Converter
    base_url: str
    tls: ssl.SSLContext
    clients: list[httpx.Client] = field(default_factory=list)
    made: int = 0

    def client(self, role: Role | None) -> httpx.Client:
        """A browser: signed in as a user of this role, or with no session at all."""
        client = httpx.Client(base_url=self.base_url, verify=self.tls, follow_redirects=False)
        self.clients.append(client)
        if role is None:
            return client
        username = f"{role.value[:4]}{len(self.clients)}"
        self.auth.users.create(username, PASSWORD, role)
        page = client.get("/login")
        assert page.status_code == 200, page.text
        response = client.post(
            "/login",
            data={"username": username, "password": PASSWORD, "csrf_token": token(page.text)},
        )
        assert response.status_code == 303, response.text
        return client

    @property
    def auth(self) -> PanelAuth:
        auth = self.app.state.auth
        assert isinstance(auth, PanelAuth)
        return auth

    def held_object(self) -> int:
        """Drop a PNG with no identity through the real converter: it is queued, held."""
        return self._enqueue(PatientIdentity()).object_id

    def failed_object(self, status: int = 0xA700, reason: str = "Refused: Out of Resources") -> int:
        """A bound object the PACS refused for good (the lane's mark_failed, as after C-STORE)."""
        identity = PatientIdentity(patient_id="PID001", patient_name="Doe^Jane")
        object_id = self._enqueue(identity).object_id
        entry = self.spool.claim_next("pacs")
        assert entry is not None and entry.object_id == object_id
        self.spool.mark_failed(entry.delivery_id, "dimse_failure", reason, status)
        return object_id

    def failures_two_a_page(self, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        """Three refused objects, with the queue listing two failures a page."""
        monkeypatch.setattr(queue_page, "FAILURES_LISTED", 2)
        return [self.failed_object() for _ in range(3)]

    def _enqueue(self, identity: PatientIdentity) -> EnqueueResult:
        drop = self.state.parent / "drop"
        drop.mkdir(exist_ok=True)
        self.made += 1  # different pixels each time: same bytes would be the same instance
        path = drop / f"capture{self.made}.png"
        gray_image(seed=self.made).save(path)
        item = RawItem(
            path=path,
            source="export",
            size=path.stat().st_size,
            mtime=MTIME,
            binding=Binding.from_identity(identity),
        )
        converted = self.converter.convert(item, self.spool.staging_path())
        origin = ObjectSource(
            SourceChannel.FILE,
            "export",
            converted.source_sha256,
            MTIME,
            size=path.stat().st_size,
            file_name=path.name,
            identity_note=NOTE if not identity.known else None,
            hint_patient_id=HINT if not identity.known else None,
        )
        return self.spool.enqueue(converted, "export", origin)

    def audit_lines(self) -> list[dict[str, Any]]:
        """Every audit record written so far, logins left out."""
        path = self.state / AUDIT_FILE
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return [line for line in lines if line["action"] != "login"]


def token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _TOKEN.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


MakePanel = Callable[..., Panel]
# What a held object's file name said that could not be used (see Panel._enqueue).
NOTE = "patient name from file name is 70 characters, DICOM allows 64"
HINT = "PID-HINT-7"


@pytest.fixture
def make_panel(tmp_path: Path, pki: Pki) -> Iterator[MakePanel]:
    """Build the panel; everything is stopped and closed when the test ends."""
    closers: list[Callable[[], None]] = []
    panels: list[Panel] = []

    def make(
        *,
        ris_port: int | None = None,
        items: Sequence[WorklistItem] = ITEMS,
        watcher: FolderWatcher | None = None,
        serial: SerialReader | None = None,
        listener_port: int | None = None,
    ) -> Panel:
        state = tmp_path / "state"
        drop = tmp_path / "in"
        drop.mkdir(exist_ok=True)
        ingest: dict[str, Any] = {"folder": [{"name": "export", "path": str(drop)}]}
        if serial is not None:
            ingest["serial"] = [serial.port.cfg.model_dump()]
        config = GatewayConfig.model_validate(
            {
                "gateway": {"state_dir": str(state), "ae_title": "EDGE_GW"},
                "ingest": ingest,
                "destination": [
                    {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}
                ],
                "worklist": ris_settings(ris_port or 104).model_dump(),
                **({} if listener_port is None else {"dicom_listener": {"port": listener_port}}),
            }
        )
        parts = open_parts(
            tmp_path, closers, items, config.worklist if ris_port is not None else None
        )
        spool, cache, clock = parts.spool, parts.cache, parts.clock
        services = WebServices(
            config_path=tmp_path / "gateway.toml",
            config=config,
            credentials_dir=None,
            clock=clock,
            started_at=clock.now() - 3 * 3600,
            version="9.8.7",
            spool=spool,
            reconciler=parts.reconciler,
            audit=parts.audit,
            worklist=cache,
            refresher=parts.refresher,
            selection=parts.selection,
            watchers={} if watcher is None else {"export": watcher},
            serial_readers={} if serial is None else {serial.source: serial},
        )
        # A cheap hash: the panel's own argon2 parameters are tested with the accounts.
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        auth = open_auth(state, config.web, clock, hasher)
        app = create_web_app(services, auth)
        base_url, stop = serve_https(app, pki)
        closers.append(stop)
        tls = ssl.create_default_context(cafile=str(pki.ca))
        panel = Panel(
            state, app, services, spool, cache, parts.selection, parts.converter, base_url, tls
        )
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        for client in panel.clients:
            client.close()
    for close in reversed(closers):
        close()


def serve_https(app: FastAPI, pki: Pki) -> tuple[str, Callable[[], None]]:
    """The app on the panel's own HTTPS server on a free loopback port; returns URL and stop."""
    context = panel_ssl_context(pki.gateway.cert, pki.gateway.key)
    server = WebServer(app, "127.0.0.1", 0, context, logging.getLogger("t.web"))
    server.start()
    return f"https://localhost:{server.port}", server.stop


@pytest.fixture
def panel(make_panel: MakePanel) -> Panel:
    """The panel with the worklist cache holding ITEMS and the hostile-named step; no RIS."""
    return make_panel(items=(*ITEMS, HOSTILE))


# Dashboard


def test_the_dashboard_shows_sources_queues_held_worklist_disk_version_and_uptime(
    panel: Panel,
) -> None:
    panel.held_object()
    panel.failed_object(reason="Refused: Out of Resources")
    browser = panel.client(Role.TECHNOLOGIST)
    page = browser.get("/")
    assert page.status_code == 200
    text = page.text
    assert "export" in text  # the drop folder
    assert "pacs" in text
    assert "Refused: Out of Resources" in text  # last error of the destination
    assert "<strong>1</strong> held" in text  # one held object
    assert "4 step(s) cached" not in text  # ITEMS and the hostile step: five
    assert "5 step(s) cached" in text
    assert "Version 9.8.7" in text
    assert "Up 3 h 00 min" in text
    assert "free" in text


def test_the_dashboard_says_when_an_update_was_rolled_back(panel: Panel) -> None:
    from gateway.update.status import add_to_blacklist

    add_to_blacklist(panel.state, "9.9.9", "self-test failed", 1.0)
    text = panel.client(Role.TECHNOLOGIST).get("/").text
    assert "refused for good: 9.9.9" in text


def test_the_dashboard_shows_what_first_boot_refused_and_nothing_once_all_is_well(
    panel: Panel,
) -> None:
    from gateway.appliance.fatimport import write_panel_report

    problem = (
        "import-config: refused: the box keeps its configuration (the defaults on a new box) "
        "(web.colour (dicom-gateway.toml line 3): unknown key; <b>x</b>)"
    )
    write_panel_report(panel.state, [problem], None)
    text = panel.client(Role.TECHNOLOGIST).get("/").text
    assert "First boot needs attention" in text
    assert "web.colour (dicom-gateway.toml line 3): unknown key" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text  # the card's text, escaped
    write_panel_report(panel.state, [], None)  # the next boot found nothing wrong
    assert "First boot" not in panel.client(Role.TECHNOLOGIST).get("/").text


def test_the_dashboard_shows_when_a_folder_last_took_a_file_and_the_state_of_ports(
    make_panel: MakePanel, tmp_path: Path
) -> None:
    drop = tmp_path / "in"
    drop.mkdir()
    (drop / "a.png").write_bytes(b"png")
    # The watcher's clock is 150 s behind: the file it takes was taken "2 min ago".
    clock = FakeClock(time.time() - 150)
    folder = FolderIngest.model_validate({"name": "export", "path": str(drop)})
    watcher = FolderWatcher(folder, lambda path: True, clock, logging.getLogger("t.watch"))
    watcher.scan_once()
    clock.advance(folder.settle_seconds)
    watcher.scan_once()
    assert watcher.last_activity is not None
    port = SerialPort(
        serial_config("/dev/ttyUSB7"), clock, logging.getLogger("t.port"), FakeOpener()
    )
    reader = SerialReader(
        source="dev",
        port=port,
        engine_factory=LineEngine,
        sink=lambda message: True,
        clock=clock,
        logger=logging.getLogger("t.reader"),
    )
    assert port.open()
    panel = make_panel(watcher=watcher, serial=reader, listener_port=free_port())
    text = panel.client(Role.TECHNOLOGIST).get("/").text
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>.*?</tr>", text, re.S)
    assert rows[-3:] == ["export", "dev", "DICOM listener"]
    assert "2 min ago" in text
    assert "/dev/ttyUSB7" in text and "port open" in text
    assert "not running" in text  # the listener: configured, not started here


def test_without_a_session_every_screen_sends_the_browser_to_login(panel: Panel) -> None:
    browser = panel.client(None)
    object_id = panel.held_object()
    for path in ("/", "/worklist", "/held", f"/held/{object_id}", "/queue", f"/queue/{object_id}"):
        response = browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/login"


# Worklist


def test_the_worklist_lists_cached_steps_and_a_hostile_name_renders_as_text(panel: Panel) -> None:
    browser = panel.client(Role.TECHNOLOGIST)
    page = browser.get("/worklist")
    assert page.status_code == 200
    assert "Doe, Jane" in page.text
    assert "Müller, Jörg" in page.text
    assert SCRIPT_NAME not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "PIDX&lt;b&gt;" in page.text
    assert "Select for this room" in page.text
    assert "Fetched from the RIS" in page.text


def test_a_technologist_selects_a_step_for_the_room_and_clears_it(panel: Panel) -> None:
    browser = panel.client(Role.TECHNOLOGIST)
    csrf = token(browser.get("/worklist").text)
    response = browser.post("/worklist/select", data={"item_key": OTHER.key, "csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/worklist"
    current = panel.selection.current()
    assert current is not None and current.item_key == OTHER.key
    assert current.by.startswith("web:tech")
    page = browser.get("/worklist")
    assert "Selected for this room" in page.text  # the flash after the redirect
    assert 'class="selected"' in page.text
    response = browser.post("/worklist/clear", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert panel.selection.current() is None
    select, clear = panel.audit_lines()
    assert (select["action"], select["target"]) == ("procedure select", "accession ACC002")
    assert select["details"] == {"item_key": OTHER.key, "step": "SPS002"}
    assert clear["action"] == "procedure clear"
    assert select["actor"] == clear["actor"] == current.by


def test_selecting_a_step_that_left_the_cache_is_refused_on_the_page(panel: Panel) -> None:
    browser = panel.client(Role.TECHNOLOGIST)
    csrf = token(browser.get("/worklist").text)
    response = browser.post("/worklist/select", data={"item_key": "0" * 32, "csrf_token": csrf})
    assert response.status_code == 404
    assert "no longer in the worklist" in response.text
    assert panel.selection.current() is None
    assert panel.audit_lines() == []


@pytest.mark.parametrize("sent", [None, "forged-token"])
def test_a_post_without_the_sessions_csrf_token_changes_nothing(
    panel: Panel, sent: str | None
) -> None:
    browser = panel.client(Role.ENGINEER)
    object_id = panel.held_object()
    failed = panel.failed_object()
    extra = {} if sent is None else {"csrf_token": sent}
    posts = [
        ("/worklist/select", {"item_key": ITEM.key}),
        (f"/held/{object_id}/bind", {"item_key": ITEM.key}),
        (f"/held/{object_id}/discard", {"reason": "forged"}),
        (f"/queue/{failed}/retry", {}),
        ("/queue/purge", {"confirm": "yes"}),
    ]
    for path, data in posts:
        response = browser.post(path, data={**data, **extra})
        assert response.status_code == 403, path
    assert panel.selection.current() is None
    assert [info.object_id for info in panel.services.reconciler.list_held()] == [object_id]
    assert len(panel.spool.list_deliveries(DeliveryState.FAILED)) == 1
    assert panel.audit_lines() == []


@pytest.mark.peers
def test_refresh_now_asks_the_ris_and_an_outage_keeps_the_cache(
    make_panel: MakePanel, make_ris: MakeRis
) -> None:
    ris = make_ris(ae_title="RIS")
    ris.add(
        mwl_dataset(
            patient_name="Fresh^Ann",
            patient_id="RIS1",
            accession_number="RISACC1",
            start_date=TODAY_DA,
        )
    )
    ris.start()
    panel = make_panel(ris_port=ris.port, items=())
    browser = panel.client(Role.TECHNOLOGIST)
    page = browser.get("/worklist")
    assert "The worklist cache is empty" in page.text
    response = browser.post("/worklist/refresh", data={"csrf_token": token(page.text)})
    assert response.status_code == 303, response.text
    page = browser.get("/worklist")
    assert "Worklist refreshed: 1 step(s)." in page.text
    assert "Fresh, Ann" in page.text
    ris.stop()  # the RIS is down: the cache must stay as it was
    response = browser.post("/worklist/refresh", data={"csrf_token": token(page.text)})
    assert response.status_code == 502
    assert "the cache was kept" in response.text
    assert "Fresh, Ann" in response.text
    assert [i.patient_id for i in panel.cache.items()] == ["RIS1"]
    ok, failed = panel.audit_lines()
    assert ok["action"] == failed["action"] == "worklist refresh"
    assert (ok["details"]["ok"], failed["details"]["ok"]) == (True, False)


# Held objects


def test_held_objects_are_listed_with_why_and_open_with_header_and_worklist_steps(
    panel: Panel,
) -> None:
    object_id = panel.held_object()
    browser = panel.client(Role.TECHNOLOGIST)
    listing = browser.get("/held")
    assert listing.status_code == 200
    assert f'href="/held/{object_id}"' in listing.text
    assert HELD_NO_IDENTITY in listing.text
    page = browser.get(f"/held/{object_id}")
    assert page.status_code == 200
    assert "What its header says" in page.text
    assert "No step shares its accession number or patient ID" in page.text
    assert "All other steps in the worklist (5)" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert SCRIPT_NAME not in page.text
    assert browser.get("/held/99999").status_code == 404


@pytest.mark.peers
def test_a_technologist_binds_a_held_object_to_a_worklist_step(panel: Panel) -> None:
    object_id = panel.held_object()
    browser = panel.client(Role.TECHNOLOGIST)
    csrf = token(browser.get(f"/held/{object_id}").text)
    response = browser.post(
        f"/held/{object_id}/bind", data={"item_key": ITEM.key, "csrf_token": csrf}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/held"
    assert "bound and released to 1 destination" in browser.get("/held").text
    info = panel.spool.show(object_id)
    assert info is not None and info.payload is not None
    assert [d.state for d in info.deliveries] == [DeliveryState.PENDING]
    ds = pydicom.dcmread(info.payload)
    assert (ds.PatientID, ds.AccessionNumber) == ("PID001", "ACC001")
    assert_valid_dicom(info.payload)
    (line,) = panel.audit_lines()
    assert line["action"] == "held.bind_item"
    assert line["actor"].startswith("web:tech")
    assert line["target"] == f"object:{object_id}"


def test_binding_by_accession_number_needs_exactly_one_step(panel: Panel) -> None:
    object_id = panel.held_object()
    browser = panel.client(Role.TECHNOLOGIST)
    csrf = token(browser.get(f"/held/{object_id}").text)
    for accession, words in (
        ("ACC003", "Several worklist steps have this accession number"),  # two steps
        ("NOPE", "no worklist item with accession number"),
    ):
        response = browser.post(
            f"/held/{object_id}/bind", data={"accession_number": accession, "csrf_token": csrf}
        )
        assert response.status_code == 409
        assert words in response.text
    assert [i.object_id for i in panel.services.reconciler.list_held()] == [object_id]
    response = browser.post(
        f"/held/{object_id}/bind", data={"accession_number": "ACC002", "csrf_token": csrf}
    )
    assert response.status_code == 303, response.text
    (line,) = panel.audit_lines()
    assert (line["action"], line["details"]["item_key"]) == ("held.bind_item", OTHER.key)


def test_typed_demographics_that_are_wrong_come_back_with_the_reason_then_bind(
    panel: Panel,
) -> None:
    object_id = panel.held_object()
    browser = panel.client(Role.TECHNOLOGIST)
    csrf = token(browser.get(f"/held/{object_id}").text)
    typed = {
        "patient_id": "TYPED1",
        "patient_name": "Ödön^Zsófia",
        "birth_date": "19701340",
        "sex": "F",
        "accession_number": "WALKIN1",
        "csrf_token": csrf,
    }
    response = browser.post(f"/held/{object_id}/demographics", data=typed)
    assert response.status_code == 422
    assert "birth date must be a date written YYYYMMDD" in response.text
    assert 'value="Ödön^Zsófia"' in response.text  # kept for the correction
    assert panel.audit_lines() == []
    response = browser.post(
        f"/held/{object_id}/demographics", data={**typed, "birth_date": "19700203"}
    )
    assert response.status_code == 303, response.text
    info = panel.spool.show(object_id)
    assert info is not None and info.payload is not None
    ds = pydicom.dcmread(info.payload)
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate) == (
        "TYPED1",
        "Ödön^Zsófia",
        "19700203",
    )
    (line,) = panel.audit_lines()
    assert line["action"] == "held.bind_demographics"
    assert "TYPED1" not in str(line) and "Zsófia" not in str(line)


def test_discarding_needs_a_reason_and_keeps_the_file(panel: Panel) -> None:
    object_id = panel.held_object()
    browser = panel.client(Role.TECHNOLOGIST)
    csrf = token(browser.get(f"/held/{object_id}").text)
    response = browser.post(f"/held/{object_id}/discard", data={"reason": "", "csrf_token": csrf})
    assert response.status_code == 422
    assert [i.object_id for i in panel.services.reconciler.list_held()] == [object_id]
    response = browser.post(
        f"/held/{object_id}/discard", data={"reason": "test shot", "csrf_token": csrf}
    )
    assert response.status_code == 303
    assert panel.services.reconciler.list_held() == []
    (line,) = panel.audit_lines()
    assert (line["action"], line["details"]["reason"]) == ("held.discard", "test shot")
    again = browser.post(f"/held/{object_id}/discard", data={"reason": "twice", "csrf_token": csrf})
    assert again.status_code == 404  # no longer held: said above the list


def test_a_held_object_shows_its_file_why_its_name_was_not_used_and_the_hint(
    panel: Panel,
) -> None:
    object_id = panel.held_object()
    browser = panel.client(Role.TECHNOLOGIST)
    listing = browser.get("/held")
    assert f"export: capture{panel.made}.png" in listing.text
    page = browser.get(f"/held/{object_id}")
    assert "Where it came from" in page.text
    assert f"export: capture{panel.made}.png" in page.text
    assert f"File name identity not used: {NOTE}" in page.text
    assert f"a hint, not bound): patient ID {HINT}" in page.text


def test_the_held_list_says_how_many_there_are_and_links_the_next_page(
    panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(held_page, "MAX_LISTED", 2)
    ids = [panel.held_object() for _ in range(3)]
    browser = panel.client(Role.TECHNOLOGIST)
    first = browser.get("/held")
    assert "Showing 1-2 of 3" in first.text
    assert 'href="/held?offset=2" rel="next"' in first.text
    assert f'href="/held/{ids[2]}"' not in first.text
    second = browser.get("/held?offset=2")
    assert "Showing 3-3 of 3" in second.text and 'rel="next"' not in second.text
    assert 'href="/held?offset=0" rel="prev"' in second.text
    assert f'href="/held/{ids[2]}"' in second.text
    assert browser.get("/held?offset=-1").status_code == 422
    monkeypatch.setattr(held_page, "MAX_LISTED", 200)
    assert "Showing" not in browser.get("/held").text  # all on one page: nothing to say


# Queue


def test_the_queue_pages_a_destinations_failures_and_says_how_many(
    panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = panel.failures_two_a_page(monkeypatch)
    browser = panel.client(Role.TECHNOLOGIST)
    first = browser.get("/queue")
    assert "Showing 1-2 of 3" in first.text
    assert 'href="/queue?destination=pacs&amp;offset=2" rel="next"' in first.text
    second = browser.get("/queue?destination=pacs&offset=2")
    assert "Showing 3-3 of 3" in second.text
    assert f'href="/queue/{ids[2]}"' in second.text and f'href="/queue/{ids[0]}"' not in second.text


def test_a_queued_object_names_its_sources_by_folder_not_by_file_name(panel: Panel) -> None:
    object_id = panel.failed_object()
    page = panel.client(Role.TECHNOLOGIST).get(f"/queue/{object_id}")
    assert "Where it came from" in page.text
    assert "export (file)" in page.text
    assert f"capture{panel.made}.png" not in page.text  # a file name may carry a patient name


def test_the_queue_shows_failures_with_their_dicom_status_and_reason(panel: Panel) -> None:
    object_id = panel.failed_object(0xA700, "Refused: Out of Resources")
    browser = panel.client(Role.TECHNOLOGIST)
    page = browser.get("/queue")
    assert page.status_code == 200
    assert "0xA700" in page.text
    assert "Refused: Out of Resources" in page.text
    assert "dimse_failure" in page.text
    assert f'href="/queue/{object_id}"' in page.text
    detail = browser.get(f"/queue/{object_id}")
    assert detail.status_code == 200
    assert "0xA700" in detail.text
    assert browser.get("/queue/99999").status_code == 404


def test_a_technologist_may_look_at_the_queue_but_not_retry_or_purge(panel: Panel) -> None:
    object_id = panel.failed_object()
    browser = panel.client(Role.TECHNOLOGIST)
    page = browser.get("/queue")
    assert "Retry" not in page.text and "Purge" not in page.text
    csrf = token(page.text)
    for path, data in (
        (f"/queue/{object_id}/retry", {}),
        ("/queue/retry", {"destination": "pacs"}),
        ("/queue/purge", {"confirm": "yes"}),
        (f"/queue/{object_id}/purge", {"confirm": "yes"}),
    ):
        response = browser.post(path, data={**data, "csrf_token": csrf})
        assert response.status_code == 403, path
    assert len(panel.spool.list_deliveries(DeliveryState.FAILED)) == 1
    assert panel.audit_lines() == []


def test_an_engineer_retries_one_object_then_every_failed_one_of_a_destination(
    panel: Panel,
) -> None:
    first, second = panel.failed_object(), panel.failed_object()
    browser = panel.client(Role.ENGINEER)
    csrf = token(browser.get("/queue").text)
    response = browser.post(f"/queue/{first}/retry", data={"csrf_token": csrf})
    assert response.status_code == 303
    states = {d.object_id: d.state for d in panel.spool.list_deliveries()}
    assert states == {first: DeliveryState.PENDING, second: DeliveryState.FAILED}
    response = browser.post("/queue/retry", data={"destination": "pacs", "csrf_token": csrf})
    assert response.status_code == 303
    assert "1 failed deliveries set to be sent again now" in browser.get("/queue").text
    assert {d.state for d in panel.spool.list_deliveries()} == {DeliveryState.PENDING}
    one, every = panel.audit_lines()
    assert (one["action"], one["target"], one["details"]) == (
        "queue retry",
        f"object:{first}",
        {"deliveries": 1},
    )
    assert (every["target"], every["details"]) == ("destination:pacs", {"deliveries": 1})
    assert one["actor"].startswith("web:engi")
    unknown = browser.post("/queue/retry", data={"destination": "nope", "csrf_token": csrf})
    assert unknown.status_code == 404


def test_purging_failed_deliveries_needs_confirmation(panel: Panel) -> None:
    object_id = panel.failed_object()
    browser = panel.client(Role.ENGINEER)
    csrf = token(browser.get("/queue").text)
    response = browser.post("/queue/purge", data={"csrf_token": csrf})
    assert response.status_code == 422
    assert "Tick the box" in response.text
    assert len(panel.spool.list_deliveries(DeliveryState.FAILED)) == 1
    response = browser.post("/queue/purge", data={"confirm": "yes", "csrf_token": csrf})
    assert response.status_code == 303
    assert panel.spool.list_deliveries() == []
    assert panel.spool.show(object_id) is None  # nothing left to send: gone with its file
    (line,) = panel.audit_lines()
    assert (line["action"], line["details"]) == ("queue purge", {"deliveries": 1})


# No patient data in URLs


_LINKS = re.compile(r'(?:href|action)="([^"]*)"')


def test_no_link_form_or_redirect_carries_patient_data(panel: Panel) -> None:
    held = panel.held_object()
    failed = panel.failed_object()
    browser = panel.client(Role.ENGINEER)
    urls: set[str] = set()
    for path in ("/", "/worklist", "/held", f"/held/{held}", "/queue", f"/queue/{failed}"):
        page = browser.get(path)
        assert page.status_code == 200, path
        urls.update(_LINKS.findall(page.text))
    csrf = token(browser.get("/worklist").text)
    for path, data in (
        ("/worklist/select", {"item_key": HOSTILE.key}),
        (f"/held/{held}/bind", {"item_key": ITEM.key}),
        (f"/queue/{failed}/retry", {}),
    ):
        response = browser.post(path, data={**data, "csrf_token": csrf})
        assert response.status_code == 303, path
        urls.add(response.headers["location"])
    assert f"/held/{held}/bind" in urls and "/worklist/select" in urls
    for url in urls:
        for value in PATIENT_VALUES:
            assert value not in url, url
        assert "script" not in url.lower()
