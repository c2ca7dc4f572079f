"""The operator screens: dashboard, worklist, held objects and queue.

View helpers are tested alone; the screens are tested through the panel app over a real Spool,
WorklistCache, RoomSelection, Reconciler and AuditLog in a tmp state dir.
"""

from __future__ import annotations

import datetime

import pytest

from gateway.spool.entries import DeliveryState, DestinationStats
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
from tests.worklist.factory import make_item

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
