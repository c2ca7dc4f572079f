"""WorklistClient and WorklistRefresher against DCMTK wlmscpfs as the RIS (real peer)."""

from __future__ import annotations

import datetime
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import Clock, FakeClock, SystemClock
from gateway.config import WorklistSection
from gateway.worklist.cache import WorklistCache
from gateway.worklist.client import WorklistClient, WorklistUnavailable
from gateway.worklist.refresher import WorklistRefresher
from tests.peers import free_port
from tests.worklist.conftest import MakeRis
from tests.worklist.factory import mwl_dataset

pytestmark = pytest.mark.peers

TODAY = datetime.date.today()
TODAY_DA = f"{TODAY:%Y%m%d}"

NAMES = {
    # accession: (patient name, Specific Character Set the RIS file declares)
    "LAT1": ("Müller^Zoë", "ISO_IR 100"),
    "UTF8": ("Grüß^Ωmega^Ελένη", "ISO_IR 192"),
    "JP87": ("Yamada^Tarou=山田^太郎=やまだ^たろう", ["", "ISO 2022 IR 87"]),
    "JP13": ("ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", ["ISO 2022 IR 13", "ISO 2022 IR 87"]),
}


def settings(port: int, **overrides: object) -> WorklistSection:
    values: dict[str, object] = {
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
    values.update(overrides)
    return WorklistSection.model_validate(values)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[WorklistCache]:
    c = WorklistCache(tmp_path / "state" / "worklist.sqlite", SystemClock())
    c.open()
    yield c
    c.close()


def refresher_for(
    s: WorklistSection, cache: WorklistCache, clock: Clock | None = None, **client_kwargs: object
) -> WorklistRefresher:
    client = WorklistClient(s, "EDGE_GW", None, **client_kwargs)  # type: ignore[arg-type]
    return WorklistRefresher(
        client, cache, s, clock or SystemClock(), logging.getLogger("test.worklist")
    )


def noon_of(day: datetime.date) -> FakeClock:
    """A clock on the day the module's dates were computed: a run that crosses midnight
    would otherwise query a window one day later than the items it planted."""
    return FakeClock(datetime.datetime.combine(day, datetime.time(12)).timestamp())


def add_international(ris) -> None:  # type: ignore[no-untyped-def]
    for n, (acc, (name, charset)) in enumerate(NAMES.items()):
        ris.add(
            mwl_dataset(
                patient_name=name, accession_number=acc, step_id=f"S{n}", start_date=TODAY_DA
            ),
            charset,
        )


def test_non_ascii_names_in_utf8_latin1_and_iso2022_japanese_reach_the_cache_as_unicode(
    make_ris: MakeRis, cache: WorklistCache
):
    ris = make_ris(return_charset="keep")
    add_international(ris)
    ris.start()
    refresher = refresher_for(settings(ris.port), cache)
    refresher.refresh_now()
    assert refresher.last_error is None
    got = {item.accession_number: item.patient_name for item in cache.items()}
    assert got == {acc: name for acc, (name, _) in NAMES.items()}
    item = cache.find(accession_number="JP87")[0]
    assert str(item.dataset().PatientName) == NAMES["JP87"][0]
    assert "SpecificCharacterSet" not in item.dataset()


def test_a_ris_that_declares_no_character_set_is_decoded_with_the_configured_fallback(
    make_ris: MakeRis, cache: WorklistCache
):
    ris = make_ris(return_charset="none")
    ris.add(mwl_dataset(patient_name="Müller^Zoë", start_date=TODAY_DA), "ISO_IR 100")
    ris.start()
    refresher = refresher_for(settings(ris.port, character_set="ISO_IR 100"), cache)
    refresher.refresh_now()
    assert [i.patient_name for i in cache.items()] == ["Müller^Zoë"]


def test_an_undecodable_response_fails_the_refresh_and_keeps_the_cache(
    make_ris: MakeRis, cache: WorklistCache
):
    ris = make_ris(return_charset="none")
    ris.add(mwl_dataset(patient_name="Plain^Ascii", accession_number="OK1", start_date=TODAY_DA))
    ris.start()
    refresher = refresher_for(settings(ris.port, character_set="ISO_IR 192"), cache)
    refresher.refresh_now()
    before = cache.items()
    assert [i.accession_number for i in before] == ["OK1"]
    # Latin-1 bytes, no declared set, UTF-8 assumed: the name cannot be decoded faithfully.
    ris.add(
        mwl_dataset(
            patient_name="Müller^Zoë", accession_number="BAD", step_id="S9", start_date=TODAY_DA
        ),
        "ISO_IR 100",
    )
    refresher.refresh_now()
    assert refresher.last_error is not None
    assert "decode" in refresher.last_error
    assert cache.items() == before


def test_query_keys_select_modality_station_and_the_date_window(
    make_ris: MakeRis, cache: WorklistCache
):
    ris = make_ris()
    far = f"{TODAY + datetime.timedelta(days=5):%Y%m%d}"
    yesterday = f"{TODAY - datetime.timedelta(days=1):%Y%m%d}"
    ris.add(mwl_dataset(accession_number="KEEP", step_id="1", start_date=TODAY_DA))
    ris.add(mwl_dataset(accession_number="YDAY", step_id="2", start_date=yesterday))
    ris.add(mwl_dataset(accession_number="CT", step_id="3", start_date=TODAY_DA, modality="CT"))
    ris.add(
        mwl_dataset(accession_number="ROOM2", step_id="4", start_date=TODAY_DA, station_ae="ROOM2")
    )
    ris.add(mwl_dataset(accession_number="LATER", step_id="5", start_date=far))
    ris.start()
    refresher = refresher_for(
        settings(ris.port, days_before=1, days_after=1), cache, noon_of(TODAY)
    )
    refresher.refresh_now()
    assert sorted(i.accession_number for i in cache.items()) == ["KEEP", "YDAY"]
    item = cache.find(accession_number="KEEP")[0]
    assert (item.modality, item.scheduled_station_ae_title) == ("US", "EDGE_GW")
    assert item.scheduled_procedure_step_id == "1"
    assert item.patient_birth_date == "19800101"


def test_ris_outage_keeps_the_cache_and_the_next_refresh_recovers(
    make_ris: MakeRis, cache: WorklistCache, caplog: pytest.LogCaptureFixture
):
    ris = make_ris()
    add_international(ris)
    ris.start()
    refresher = refresher_for(settings(ris.port), cache)
    refresher.refresh_now()
    before = cache.items()
    fetched = cache.fetched_at
    assert len(before) == 4
    ris.stop()
    caplog.set_level(logging.DEBUG, logger="test.worklist")
    refresher.refresh_now()
    refresher.refresh_now()
    assert refresher.last_error is not None
    assert cache.items() == before
    assert cache.fetched_at == fetched
    levels = [r.levelno for r in caplog.records if "refresh" in r.getMessage()]
    assert levels == [logging.ERROR, logging.DEBUG]  # the transition once, then quietly
    ris.clear()
    ris.add(mwl_dataset(accession_number="NEW", start_date=TODAY_DA))
    ris.start()
    refresher.refresh_now()
    assert refresher.last_error is None
    assert [i.accession_number for i in cache.items()] == ["NEW"]
    assert any(r.getMessage() == "worklist refresh recovered" for r in caplog.records)


def test_a_ris_that_rejects_the_called_ae_title_fails_the_refresh(
    make_ris: MakeRis, cache: WorklistCache
):
    ris = make_ris()
    ris.start()
    refresher = refresher_for(settings(ris.port, ae_title="NOT_THE_RIS"), cache)
    refresher.refresh_now()
    assert refresher.last_error is not None
    assert refresher.last_success is None


def test_a_ris_slower_than_the_dimse_timeout_fails_the_refresh(
    make_ris: MakeRis, cache: WorklistCache
):
    ris = make_ris(extra_args=["--sleep-before", "4"])
    ris.add(mwl_dataset(start_date=TODAY_DA))
    ris.start()
    refresher = refresher_for(settings(ris.port, dimse_timeout=1), cache)
    refresher.refresh_now()
    assert refresher.last_error is not None
    assert cache.items() == []


def test_a_query_deadline_aborts_a_slow_ris(make_ris: MakeRis):
    ris = make_ris(extra_args=["--sleep-before", "4"])
    ris.add(mwl_dataset(start_date=TODAY_DA))
    ris.start()
    client = WorklistClient(settings(ris.port, dimse_timeout=30), "EDGE_GW", None)
    with pytest.raises(WorklistUnavailable, match="deadline"):
        client.fetch_scheduled  # noqa: B018 - reads as the API under test
        client.query(mwl_dataset(), deadline=time.monotonic() + 2.0)  # the RIS sleeps 4 s


def test_more_matches_than_the_cap_fail_the_query(make_ris: MakeRis, cache: WorklistCache):
    ris = make_ris()
    for n in range(3):
        ris.add(mwl_dataset(accession_number=f"A{n}", step_id=f"S{n}", start_date=TODAY_DA))
    ris.start()
    refresher = refresher_for(settings(ris.port), cache, max_responses=2)
    refresher.refresh_now()
    assert refresher.last_error is not None
    assert "more than 2" in refresher.last_error
    assert cache.items() == []


def test_a_peer_that_accepts_tcp_and_never_speaks_fails_the_refresh(cache: WorklistCache):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        refresher = refresher_for(settings(port, acse_timeout=1), cache)
        refresher.refresh_now()
        assert refresher.last_error is not None
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_nothing_listening_fails_the_refresh(cache: WorklistCache):
    refresher = refresher_for(settings(free_port()), cache)
    refresher.refresh_now()
    assert refresher.last_error is not None
