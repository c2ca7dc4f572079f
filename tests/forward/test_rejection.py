"""A-ASSOCIATE-RJ fields in words."""

from __future__ import annotations

from gateway.forward.rejection import describe_rejection


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
