"""The support bundle: what it holds, what it never holds, and no patient data anywhere in it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.ingest.items import RawItem
from gateway.spool.store import Spool
from gateway.support import build_bundle, read_journal, redact_config, scrub
from gateway.web.services import WebServices
from gateway.worklist.binding import Binding
from gateway.worklist.cache import WorklistCache
from gateway.worklist.reconcile import Reconciler
from tests.convert.builders import gray_image
from tests.convert.conftest import MTIME, make_settings
from tests.worklist.factory import make_item

# Seeded identities: each must appear nowhere in the bundle.
QUEUED_NAME, QUEUED_ID = "Zorrino^Xaveria", "PIDZ9931"
WORKLIST_NAME, WORKLIST_ID, WORKLIST_ACC = "Quistrom^Berenike", "PIDQ7712", "ACCQ7712"

CONFIG = """\
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"

[[ingest.folder]]
name = "export"
path = "drop"
filename_pattern = '^(?P<patient_id>[^_]+)_'

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 11112
[destination.tls]
ca = "tls/ca.pem"
cert = "tls/gw.pem"
key = "tls/gw.key"
"""

KEY_PEM = "-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"


def make_services(tmp_path: Path, stack: ExitStack, config_text: str = CONFIG) -> WebServices:
    """A WebServices over a real spool, worklist cache and audit log in ``tmp_path``."""
    from gateway.config import load_config

    (tmp_path / "tls").mkdir(exist_ok=True)
    for name, body in (("ca.pem", "ca"), ("gw.pem", "cert"), ("gw.key", KEY_PEM)):
        (tmp_path / "tls" / name).write_text(body)
    (tmp_path / "drop").mkdir(exist_ok=True)
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(config_text)
    config: GatewayConfig = load_config(config_path)
    clock = SystemClock()
    state = config.gateway.state_dir
    spool = Spool(state, ["pacs"], 1 << 30, clock)
    spool.open()
    stack.callback(spool.close)
    cache = WorklistCache(state / "worklist.sqlite", clock)
    cache.open()
    stack.callback(cache.close)
    audit = AuditLog(state / AUDIT_FILE, clock)
    return WebServices(
        config_path=config_path,
        config=config,
        credentials_dir=None,
        clock=clock,
        started_at=clock.now() - 3600,
        version="test",
        spool=spool,
        reconciler=Reconciler(spool, cache, audit, spool.staging_dir, clock),
        audit=audit,
        worklist=cache,
    )


@pytest.fixture
def services(tmp_path: Path) -> Iterator[WebServices]:
    with ExitStack() as stack:
        yield make_services(tmp_path, stack)


def seed_patient_data(services: WebServices, tmp_path: Path) -> None:
    """An object for QUEUED_NAME in the queue, a worklist item, an audit record naming both."""
    settings = make_settings()
    uids = UidFactory(settings.uid_root)
    grouper = StudyGrouper(tmp_path / "grouping.sqlite", settings.study_window_seconds, uids)
    grouper.open()
    try:
        png = tmp_path / "drop" / "capture.png"
        gray_image(seed=3).save(png)
        item = RawItem(
            path=png,
            source="export",
            size=png.stat().st_size,
            mtime=MTIME,
            binding=Binding.from_identity(
                PatientIdentity(patient_id=QUEUED_ID, patient_name=QUEUED_NAME)
            ),
        )
        converted = Converter(settings, grouper, uids).convert(item, services.spool.staging_path())
        services.spool.enqueue(converted, "export")
    finally:
        grouper.close()
    assert services.worklist is not None
    services.worklist.replace(
        [
            make_item(
                patient_name=WORKLIST_NAME,
                patient_id=WORKLIST_ID,
                accession_number=WORKLIST_ACC,
                study_instance_uid="1.2.826.0.1.3680043.10.1.77",
                step_id="SPS1",
            )
        ],
        services.clock.now(),
    )
    services.audit.append(
        "web:alice",
        "held.bind_demographics",
        "object:1",
        {"patient_name": QUEUED_NAME, "patient_id": QUEUED_ID},
    )


def leaky_journal() -> tuple[str | None, str]:
    """Log lines as a careless component might have written them."""
    lines = [
        json.dumps({"event": "bound", "patient_name": QUEUED_NAME, "patient_id": QUEUED_ID}),
        f"worklist item for {WORKLIST_NAME} accession={WORKLIST_ACC} id {WORKLIST_ID}",
        json.dumps({"event": "gateway ready", "services": "spool,lane:pacs"}),
    ]
    return "\n".join(lines) + "\n", "3 lines of a fake journal"


def unzip(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            name.split("/", 1)[1]: archive.read(name).decode("utf-8") for name in archive.namelist()
        }


def test_bundle_holds_config_versions_queue_stats_and_logs(services: WebServices) -> None:
    bundle = build_bundle(services, leaky_journal)
    assert bundle.filename.startswith("dicom-gateway-support-")
    assert bundle.filename.endswith(".zip")
    files = unzip(bundle.data)
    assert set(files) == {
        "README.txt",
        "audit.txt",
        "config/gateway.toml",
        "config/tls-files.json",
        "logs/journal.txt",
        "queue.json",
        "stats.json",
        "versions.json",
    }
    assert "filename_pattern = '^(?P<patient_id>[^_]+)_'" in files["config/gateway.toml"]
    versions = json.loads(files["versions.json"])
    assert versions["gateway"] == "test"
    assert versions["pydicom"] and versions["pynetdicom"] and versions["python"]
    assert versions["uptime_seconds"] >= 3600
    assert "gateway ready" in files["logs/journal.txt"]


def test_no_seeded_patient_name_or_id_anywhere_in_the_bundle(
    services: WebServices, tmp_path: Path
) -> None:
    seed_patient_data(services, tmp_path)
    files = unzip(build_bundle(services, leaky_journal).data)
    queue = json.loads(files["queue.json"])
    assert queue["pacs"]["counts"]["pending"] == 1  # the seeded object is summarised
    everything = "\n".join(files.values())
    for value in (QUEUED_NAME, QUEUED_ID, WORKLIST_NAME, WORKLIST_ID, WORKLIST_ACC):
        assert value not in everything
        for part in value.split("^"):
            assert part not in everything
    assert "held.bind_demographics" in files["audit.txt"]  # who did what stays


def test_no_keys_database_or_payloads_in_the_bundle(services: WebServices, tmp_path: Path) -> None:
    seed_patient_data(services, tmp_path)
    data = build_bundle(services, leaky_journal).data
    files = unzip(data)
    assert "SECRETKEYMATERIAL" not in "\n".join(files.values())
    assert not any(name.endswith((".sqlite", ".dcm", ".key", ".pem")) for name in files)
    tls = json.loads(files["config/tls-files.json"])
    assert {
        "owner": "destination pacs",
        "role": "key",
        "path": str(tmp_path / "tls" / "gw.key"),
        "exists": True,
    } in tls
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sum(i.file_size for i in archive.infolist()) < 200_000


def test_no_value_adds_a_line_to_any_text_of_the_bundle(services: WebServices) -> None:
    """Issue 11 item 4: a journal line that is not ours (a traceback with a terminal colour, a
    U+2028 from a peer's text) and an actor with CR/LF stay the lines they were."""
    services.audit.append(
        "web:eve\r\n2026-01-01T00:00:00.000Z web:eng user remove", "login failed", "x"
    )

    def journal() -> tuple[str | None, str]:
        return "plain line\n\x1b[31mred\x1b[0m\u2028forged\x85line\r\nlast\n", "3 lines"

    files = unzip(build_bundle(services, journal).data)
    assert files["logs/journal.txt"].splitlines() == [
        "plain line",
        "\\u001b[31mred\\u001b[0m\\u2028forged\\u0085line",
        "last",
    ]
    assert len(files["audit.txt"].splitlines()) == 1, files["audit.txt"]
    for name, text in files.items():
        assert text.splitlines() == text.split("\n")[: len(text.splitlines())], name


def test_missing_journal_is_said_in_the_bundle(services: WebServices) -> None:
    files = unzip(build_bundle(services, lambda: (None, "journalctl is not installed")).data)
    assert files["logs/journal.txt"] == "no journal: journalctl is not installed\n"
    assert "Logs: journalctl is not installed." in files["README.txt"]


def test_real_journal_reader_answers_either_way() -> None:
    text, note = read_journal(unit="dicom-gateway-test-unit-that-does-not-exist", lines=5)
    assert text is None
    assert note  # installed without entries, not installed, or refused: said in words


def test_secret_named_keys_are_blanked_paths_stay() -> None:
    text = 'key = "tls/gw.key"\napi_token = "abc123"\n[x]\nPassword="hunter2"\n'
    out = redact_config(text)
    assert 'key = "tls/gw.key"' in out
    assert "abc123" not in out and "hunter2" not in out


@pytest.mark.parametrize(
    ("line", "gone"),
    [
        ('{"patient_name": "Doe^Jane", "uid": "1.2.3"}', "Doe"),
        ('{"PatientID": "X123", "uid": "1.2.3"}', "X123"),
        ("bound patient_id=ABC999 object=4", "ABC999"),
        ("name Müller^Jörg^^Dr in free text", "Jörg"),
        ("accession_number='A77' done", "A77"),
    ],
)
def test_scrub_removes_patient_fields_and_person_names(line: str, gone: str) -> None:
    out = scrub(line)
    assert gone not in out
    assert "[removed]" in out
    if "uid" in line:
        assert "1.2.3" in out
