"""A-ASSOCIATE-RJ fields in words."""

from __future__ import annotations

import pytest

from gateway.forward.rejection import Parties, describe_rejection, is_permanent, rejection_advice

US = Parties("EDGE_GW", "PACS", "10.1.2.3", "PACS@10.1.2.9:104")


def test_called_ae_title_rejection_reads_as_words() -> None:
    assert (
        describe_rejection(1, 1, 7)
        == "rejected (permanent) by service-user: called AE title not recognised"
    )


def test_provider_congestion_is_transient() -> None:
    assert describe_rejection(2, 3, 1) == (
        "rejected (transient) by service-provider (presentation): temporary congestion"
    )


def test_unknown_values_are_shown_as_numbers() -> None:
    assert describe_rejection(9, 1, 5) == "rejected (result 9) by service-user: reason 5"


def test_only_result_1_is_permanent() -> None:
    assert is_permanent(1)
    assert not is_permanent(2)
    assert not is_permanent(None)


def test_unknown_calling_ae_title_asks_for_ours_at_our_address() -> None:
    assert rejection_advice(1, 3, US) == (
        "PACS rejected our AE title: calling AE title not recognised — "
        "ask the PACS administrator to add AE title EDGE_GW at 10.1.2.3"
    )


def test_unknown_called_ae_title_names_the_one_we_call_and_ours() -> None:
    advice = rejection_advice(1, 7, US)
    assert advice.startswith("PACS rejected the AE title we call: called AE title PACS")
    assert "check the destination's ae_title" in advice
    # dcmqrscp says "called" for an unknown caller: ask for ours as well.
    assert "add AE title EDGE_GW at 10.1.2.3" in advice


@pytest.mark.parametrize(("reason", "words"), [(2, "host and port"), (1, "for good")])
def test_other_permanent_rejections_say_what_to_check(reason: int, words: str) -> None:
    assert words in rejection_advice(1, reason, US)


def test_without_our_address_the_advice_names_the_ae_title_only() -> None:
    parties = Parties("EDGE_GW", "PACS", None, "PACS@pacs:104")
    assert rejection_advice(1, 3, parties).endswith("add AE title EDGE_GW")
