"""/metrics: who may scrape it, what it reports from the running parts, and that it names no
patient."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.uids import UidFactory
from gateway.forward.condition import Condition, LaneStatus
from gateway.identity import PatientIdentity
from gateway.ingest.items import RawItem
from gateway.web.auth import Role
from gateway.web.metrics import metrics_token_path
from gateway.worklist.binding import Binding
from tests.convert.builders import gray_image
from tests.convert.conftest import MTIME, make_settings
from tests.web.panelkit import (
    TECHNOLOGIST,
    MakePanel,
    RunningPanel,
    panel_factory,
    services_for,
)

PATIENT = PatientIdentity(patient_id="PID4711", patient_name="Doe^Jane", accession_number="ACC9")


class FakeListener:
    """Duck-types DicomListener.stats()."""

    def stats(self) -> dict[str, int]:
        return {"accepted": 7, "tls_failed": 2, "refused_busy": 1, "active": 1}


class FakeSerial:
    """Duck-types SerialReader.stats()."""

    def stats(self) -> dict[str, int]:
        return {"delivered": 3, "refused": 1, "port_lost": 0}


class FakeWatcher:
    """Duck-types FolderWatcher.last_activity."""

    last_activity = 1_700_000_100.0


@pytest.fixture
def make_panel(tmp_path: Path) -> Iterator[MakePanel]:
    yield from panel_factory(tmp_path)


@pytest.fixture
def busy(tmp_path: Path, make_panel: MakePanel) -> Iterator[RunningPanel]:
    """A panel whose spool holds one pending and one held object, with a listener, a serial
    port and a watched folder reporting."""
    services, closers = services_for(tmp_path)
    settings = make_settings()
    uids = UidFactory(settings.uid_root)
    grouper = StudyGrouper(tmp_path / "grouping.sqlite", settings.study_window_seconds, uids)
    grouper.open()
    converter = Converter(settings, grouper, uids)
    for n, identity in enumerate((PATIENT, PatientIdentity()), start=1):
        path = tmp_path / f"capture{n}.png"
        gray_image(seed=n).save(path)
        item = RawItem(
            path=path,
            source="export",
            size=path.stat().st_size,
            mtime=MTIME,
            binding=Binding.from_identity(identity),
        )
        converted = converter.convert(item, services.spool.staging_path())
        services.spool.enqueue(converted, "export")
    services = dataclasses.replace(
        services,
        listener=FakeListener(),  # type: ignore[arg-type]
        serial_readers={"monitor": FakeSerial()},  # type: ignore[dict-item]
        watchers={"export": FakeWatcher()},  # type: ignore[dict-item]
    )
    yield make_panel(services)
    grouper.close()
    for close in closers:
        close()


def _scrape(panel: RunningPanel) -> str:
    token = metrics_token_path(panel.state).read_text().strip()
    answer = panel.browser().get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_need_the_scrape_token_or_an_engineer(make_panel: MakePanel) -> None:
    panel = make_panel()
    assert panel.browser().get("/metrics").status_code == 401
    wrong = panel.browser().get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    token_file = metrics_token_path(panel.state)
    assert token_file.stat().st_mode & 0o077 == 0
    engineer = panel.setup()
    assert engineer.get("/metrics").status_code == 200
    panel.add_user(*TECHNOLOGIST, Role.TECHNOLOGIST)
    assert panel.login(*TECHNOLOGIST).get("/metrics").status_code == 401
    assert "dicom_gateway_queue_deliveries" in _scrape(panel)


def test_a_new_token_in_the_file_works_without_a_restart(make_panel: MakePanel) -> None:
    panel = make_panel()
    metrics_token_path(panel.state).write_text("rotated-token\n")
    answer = panel.browser().get("/metrics", headers={"Authorization": "Bearer rotated-token"})
    assert answer.status_code == 200


def test_metrics_report_the_queue_sources_and_listener(busy: RunningPanel) -> None:
    samples = _samples(_scrape(busy))
    pending = ("dicom_gateway_queue_deliveries", (("destination", "pacs"), ("state", "pending")))
    held = ("dicom_gateway_queue_deliveries", (("destination", "pacs"), ("state", "held")))
    assert samples[pending] == 1.0
    assert samples[held] == 1.0
    assert samples[("dicom_gateway_held_objects", ())] == 1.0
    age = samples[("dicom_gateway_queue_oldest_pending_age_seconds", (("destination", "pacs"),))]
    assert age >= 0.0
    assert samples[("dicom_gateway_queue_pending_bytes", (("destination", "pacs"),))] > 0
    assert samples[("dicom_gateway_listener_associations_total", (("outcome", "tls_failed"),))] == 2
    assert samples[("dicom_gateway_listener_active_associations", ())] == 1
    serial = ("dicom_gateway_serial_events_total", (("event", "delivered"), ("source", "monitor")))
    assert samples[serial] == 3
    folder = ("dicom_gateway_folder_last_activity_timestamp_seconds", (("source", "export"),))
    assert samples[folder] == FakeWatcher.last_activity
    assert samples[("dicom_gateway_info", (("version", "9.8.7"),))] == 1


def test_metrics_name_no_patient(busy: RunningPanel) -> None:
    text = _scrape(busy)
    for value in ("PID4711", "Doe", "Jane", "ACC9"):
        assert value not in text


def test_metrics_report_a_rolled_back_release(make_panel: MakePanel) -> None:
    from gateway.update.status import add_to_blacklist

    panel = make_panel()
    add_to_blacklist(panel.state, "9.9.9", "self-test failed: PACS unreachable", 1.0)
    samples = _samples(_scrape(panel))
    assert samples[("dicom_gateway_update_blacklisted_releases", ())] == 1.0


class FakeLane:
    """Duck-types DeliveryLane.status: a destination paused since 10 minutes ago."""

    def __init__(self, now: float) -> None:
        self.status = LaneStatus(
            "pacs",
            Condition.PAUSED,
            "the PACS accepted none of the 3 proposed presentation contexts (CT Image Storage)",
            now - 600.0,
            7,
            now + 300.0,
        )


def test_a_paused_destination_shows_with_its_reason_in_metrics_panel_and_api(
    tmp_path: Path, make_panel: MakePanel
) -> None:
    # Issue 10 B12: a destination that refuses everything must say so, not fail each object.
    services, closers = services_for(tmp_path)
    lane = FakeLane(services.clock.now())
    panel = make_panel(dataclasses.replace(services, lanes={"pacs": lane}))
    try:
        samples = _samples(_scrape(panel))
        for condition, value in (("paused", 1.0), ("ok", 0.0), ("unreachable", 0.0)):
            key = (("condition", condition), ("destination", "pacs"))
            assert samples[("dicom_gateway_destination_condition", key)] == value
        attempts = ("dicom_gateway_destination_outage_attempts", (("destination", "pacs"),))
        assert samples[attempts] == 7

        engineer = panel.setup()
        page = engineer.get("/destinations")
        assert page.status_code == 200
        assert "paused (the PACS refuses what it must take) for 10 min" in page.text
        assert "accepted none of the 3 proposed presentation contexts" in page.text

        status = engineer.get("/api/v1/status").json()
        (pacs,) = status["destinations"]
        assert pacs["condition"] == "paused"
        assert "accepted none of the 3 proposed" in pacs["condition_text"]
        assert pacs["next_attempt"].startswith("in ")
    finally:
        for close in closers:
            close()


def test_a_destination_that_rejects_our_ae_title_shows_the_advice_in_metrics_panel_and_api(
    tmp_path: Path, make_panel: MakePanel
) -> None:
    # Issue 11 item 15: shown as "unreachable" and "last error" only; now named, with the advice.
    services, closers = services_for(tmp_path)
    now = services.clock.now()
    advice = (
        "PACS rejected our AE title: calling AE title not recognised — "
        "ask the PACS administrator to add AE title EDGE_GW at 10.1.2.3"
    )
    lane = FakeLane(now)
    lane.status = LaneStatus("pacs", Condition.REJECTED, advice, now - 600.0, 2, now + 600.0)
    panel = make_panel(dataclasses.replace(services, lanes={"pacs": lane}))
    try:
        samples = _samples(_scrape(panel))
        for condition, value in (("rejected", 1.0), ("unreachable", 0.0), ("ok", 0.0)):
            key = (("condition", condition), ("destination", "pacs"))
            assert samples[("dicom_gateway_destination_condition", key)] == value

        engineer = panel.setup()
        page = engineer.get("/destinations")
        assert "rejected by the PACS (a configuration must change) for 10 min" in page.text
        assert "ask the PACS administrator to add AE title EDGE_GW at 10.1.2.3" in page.text
        (pacs,) = engineer.get("/api/v1/status").json()["destinations"]
        assert pacs["condition"] == "rejected"
        assert advice in pacs["condition_text"]
    finally:
        for close in closers:
            close()
