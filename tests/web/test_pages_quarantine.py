"""The quarantine screen and its /metrics gauges, over a real spool, quarantine and panel."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import SystemClock
from gateway.ingest.quarantine import Quarantine
from gateway.ingest.receiver import StoreReceiver
from gateway.ingest.requeue import QuarantineDesk
from gateway.web.auth import Role
from gateway.web.metrics import metrics_token_path
from tests.convert.builders import gray_image
from tests.web.panelkit import (
    TECHNOLOGIST,
    RunningPanel,
    csrf_of,
    panel_factory,
    services_for,
)

HOSTILE_REASON = '<script>alert("x")</script> not an image'


@dataclasses.dataclass
class Rig:
    panel: RunningPanel
    quarantine: Quarantine
    drop: Path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    services, closers = services_for(tmp_path)
    clock = SystemClock()
    quarantine = Quarantine(services.state_dir / "quarantine", clock)
    receiver = StoreReceiver(
        services.spool, quarantine, prepare=None, logger=logging.getLogger("t.rx")
    )
    drop = tmp_path / "drop"
    drop.mkdir()
    desk = QuarantineDesk(
        quarantine,
        folders={"export": drop},
        serial_lines=["monitor"],
        admit=receiver.admit,
        staging_path=services.spool.staging_path,
        spool_root=services.spool.root,
        audit=services.audit,
        clock=clock,
    )
    make = panel_factory(tmp_path)
    panel = next(make)(dataclasses.replace(services, quarantine=desk))
    yield Rig(panel, quarantine, drop)
    next(make, None)
    for close in closers:
        close()


def _metric(panel: RunningPanel, name: str, channel: str) -> float:
    token = metrics_token_path(panel.state).read_text().strip()
    text = panel.browser().get("/metrics", headers={"Authorization": f"Bearer {token}"}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"channel": channel}:
                return float(sample.value)
    raise AssertionError(f"{name}{{channel={channel!r}}} not in /metrics")


def test_quarantined_files_are_listed_and_a_technologist_puts_one_back(rig: Rig) -> None:
    dropped = rig.drop / "P1_Doe_a.png"
    gray_image().save(dropped)
    size = dropped.stat().st_size
    rig.quarantine.put(dropped, "export", HOSTILE_REASON)
    message = rig.drop.parent / "message.bin"
    message.write_bytes(b"\x02H|\\^&\r")
    rig.quarantine.put(message, "monitor", "no patient ID in the message")
    image_id, message_id = (q.ident for q in rig.quarantine.list())

    assert _metric(rig.panel, "dicom_gateway_quarantined_files", "file") == 1
    assert _metric(rig.panel, "dicom_gateway_quarantined_bytes", "file") == size
    assert _metric(rig.panel, "dicom_gateway_quarantined_files", "serial") == 1
    assert _metric(rig.panel, "dicom_gateway_quarantined_files", "dicom") == 0

    rig.panel.setup()
    rig.panel.add_user(*TECHNOLOGIST, Role.TECHNOLOGIST)
    browser = rig.panel.login(*TECHNOLOGIST)
    page = browser.get("/quarantine")
    assert page.status_code == 200
    assert image_id in page.text and message_id in page.text
    assert "&lt;script&gt;" in page.text and "<script>alert" not in page.text
    assert page.text.count("Put back through ingest</button>") == 1  # not the device message
    assert "a device message is not put back" in page.text
    assert f'action="/quarantine/{image_id}/requeue"' in page.text

    answer = browser.post(
        f"/quarantine/{image_id}/requeue", data={"csrf_token": csrf_of(page.text)}
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/quarantine"
    after = browser.get("/quarantine").text
    assert "put back into drop folder" in after
    assert f"<code>{image_id}</code>" not in after
    assert dropped.stat().st_size == size
    assert _metric(rig.panel, "dicom_gateway_quarantined_files", "file") == 0
    [line] = [a for a in rig.panel.audit_lines() if a["action"] == "quarantine requeue"]
    assert line["actor"].startswith("web:tech")
    assert line["target"] == f"quarantine:{image_id}"


def test_a_refused_requeue_says_why_and_changes_nothing(rig: Rig) -> None:
    message = rig.drop.parent / "message.bin"
    message.write_bytes(b"\x02H|\\^&\r")
    rig.quarantine.put(message, "monitor", "no patient ID in the message")
    [item] = rig.quarantine.list()
    browser = rig.panel.setup()
    csrf = csrf_of(browser.get("/quarantine").text)
    answer = browser.post(f"/quarantine/{item.ident}/requeue", data={"csrf_token": csrf})
    assert answer.status_code == 409
    assert "a device message is not put back" in answer.text
    no_csrf = browser.post(f"/quarantine/{item.ident}/requeue", data={})
    assert no_csrf.status_code in (400, 403)
    assert rig.quarantine.list() == [item]
    assert browser.get("/quarantine/../etc/requeue").status_code == 404
