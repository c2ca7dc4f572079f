"""The local API as the daemon serves it: a real Unix-socket server over a real spool, worklist
cache, room selection and audit log in a tmp state dir; the test talks to it with httpx."""

from __future__ import annotations

import datetime
import getpass
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.audit import AUDIT_FILE, AuditLog
from gateway.clock import SystemClock
from gateway.config import WorklistSection
from gateway.convert.converter import Converter
from gateway.convert.grouping import StudyGrouper
from gateway.convert.uids import UidFactory
from gateway.identity import PatientIdentity
from gateway.ingest.items import RawItem
from gateway.spool.store import Spool
from gateway.web.api import ApiServices, create_api
from gateway.web.localapi import LocalApiServer, peer_actor, socket_path
from gateway.worklist.binding import HELD_NO_IDENTITY, Binding
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import WorklistClient
from gateway.worklist.item import WorklistItem
from gateway.worklist.reconcile import Reconciler
from gateway.worklist.refresher import WorklistRefresher
from gateway.worklist.selection import RoomSelection, selection_path
from tests.convert.builders import gray_image
from tests.convert.conftest import MTIME, make_settings
from tests.worklist.conftest import MakeRis
from tests.worklist.factory import make_item
from tests.worklist.wlmfiles import WlmScp

TODAY_DA = f"{datetime.date.today():%Y%m%d}"
ME = f"local:{getpass.getuser()}"

ITEM = make_item(
    patient_name="Doe^Jane",
    patient_id="PID001",
    accession_number="ACC001",
    study_instance_uid="1.2.826.0.1.3680043.10.1.77",
    requested_procedure_id="RP001",
    step_id="SPS001",
    start_date=TODAY_DA,
)
OTHER = make_item(
    patient_name="Müller^Jörg",
    patient_id="PID002",
    accession_number="ACC002",
    study_instance_uid="1.2.826.0.1.3680043.10.1.78",
    requested_procedure_id="RP002",
    step_id="SPS002",
    start_date=TODAY_DA,
    start_time="101500",
)
# One order with two steps: an accession number alone does not name one of them.
TWIN_A = make_item(
    patient_id="PID003",
    accession_number="ACC003",
    study_instance_uid="1.2.826.0.1.3680043.10.1.79",
    step_id="SPS003A",
    start_date=TODAY_DA,
    start_time="110000",
)
TWIN_B = make_item(
    patient_id="PID003",
    accession_number="ACC003",
    study_instance_uid="1.2.826.0.1.3680043.10.1.79",
    step_id="SPS003B",
    start_date=TODAY_DA,
    start_time="111500",
)
ITEMS = (ITEM, OTHER, TWIN_A, TWIN_B)


def ris_settings(port: int) -> WorklistSection:
    """[worklist] towards a RIS on a loopback port, with short timeouts."""
    return WorklistSection.model_validate(
        {
            "ae_title": "RIS",
            "host": "127.0.0.1",
            "port": port,
            "modality": "US",
            "scheduled_station_ae_title": "EDGE_GW",
            "connect_timeout": 3,
            "acse_timeout": 3,
            "dimse_timeout": 5,
            "network_timeout": 5,
        }
    )


@dataclass
class Box:
    """The gateway's state as the API sees it, and a client connected to its socket."""

    state: Path
    spool: Spool
    converter: Converter
    cache: WorklistCache
    selection: RoomSelection
    server: LocalApiServer
    client: httpx.Client
    refresher: WorklistRefresher | None
    made: int = field(default=0)

    def held_object(self) -> int:
        """Drop a PNG with no identity through the real converter: it is queued, held."""
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
            binding=Binding.from_identity(PatientIdentity()),
        )
        converted = self.converter.convert(item, self.spool.staging_path())
        assert converted.held_reason == HELD_NO_IDENTITY
        return self.spool.enqueue(converted, "export").object_id

    def audit_lines(self) -> list[dict[str, object]]:
        """Every audit record written so far."""
        path = self.state / AUDIT_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


MakeBox = Callable[..., Box]


@dataclass(frozen=True)
class Parts:
    """The running parts the API and the panel drive, on a tmp state dir, without a daemon."""

    clock: SystemClock
    state: Path
    spool: Spool
    cache: WorklistCache
    audit: AuditLog
    selection: RoomSelection
    reconciler: Reconciler
    converter: Converter
    refresher: WorklistRefresher | None


def open_parts(
    tmp_path: Path,
    closers: list[Callable[[], None]],
    items: Sequence[WorklistItem],
    ris: WorklistSection | None,
) -> Parts:
    """Open spool, grouping and a worklist cache holding ``items``; closers close them."""
    clock = SystemClock()
    state = tmp_path / "state"
    settings = make_settings()
    uids = UidFactory(settings.uid_root)
    grouper = StudyGrouper(tmp_path / "grouping.sqlite", settings.study_window_seconds, uids)
    grouper.open()
    closers.append(grouper.close)
    spool = Spool(state, ["pacs"], 1 << 30, clock)
    spool.open()
    closers.append(spool.close)
    cache = WorklistCache(state / "worklist.sqlite", clock)
    cache.open()
    closers.append(cache.close)
    cache.replace(list(items), clock.now())
    audit = AuditLog(state / AUDIT_FILE, clock)
    refresher = None
    if ris is not None:
        client = WorklistClient(ris, "EDGE_GW", None)
        refresher = WorklistRefresher(client, cache, ris, clock, logging.getLogger("t.wl"))
    return Parts(
        clock=clock,
        state=state,
        spool=spool,
        cache=cache,
        audit=audit,
        selection=RoomSelection(selection_path(state), clock, 240.0),
        reconciler=Reconciler(spool, cache, audit, spool.staging_dir, clock),
        converter=Converter(settings, grouper, uids),
        refresher=refresher,
    )


@pytest.fixture
def make_box(tmp_path: Path) -> Iterator[MakeBox]:
    """Build the box (server started); everything is stopped and closed when the test ends."""
    closers: list[Callable[[], None]] = []

    def make(*, worklist: bool = True, ris_port: int | None = None) -> Box:
        parts = open_parts(
            tmp_path, closers, ITEMS, None if ris_port is None else ris_settings(ris_port)
        )
        services = ApiServices(
            reconciler=parts.reconciler,
            audit=parts.audit,
            worklist=parts.cache if worklist else None,
            refresher=parts.refresher if worklist else None,
            selection=parts.selection if worklist else None,
            selection_expires_minutes=240.0,
        )
        server = LocalApiServer(
            create_api(services, peer_actor), socket_path(parts.state), logging.getLogger("t.api")
        )
        server.start()
        closers.append(server.stop)
        client_http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(server.path)), base_url="http://gateway"
        )
        closers.append(client_http.close)
        return Box(
            parts.state,
            parts.spool,
            parts.converter,
            parts.cache,
            parts.selection,
            server,
            client_http,
            parts.refresher,
        )

    yield make
    for close in reversed(closers):
        close()


@pytest.fixture
def box(make_box: MakeBox) -> Box:
    """The box with a worklist cache holding ITEMS and no RIS."""
    return make_box()


@pytest.fixture
def make_ris(tmp_path: Path) -> Iterator[MakeRis]:
    """Build (not start) wlmscpfs RIS peers; every one is stopped when the test ends."""
    made: list[WlmScp] = []

    def make(**kwargs: Any) -> WlmScp:
        ris = WlmScp(tmp_path / f"wlm{len(made)}", **kwargs)
        made.append(ris)
        return ris

    yield make
    for ris in made:
        ris.stop()
