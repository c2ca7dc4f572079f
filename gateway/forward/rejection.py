"""A-ASSOCIATE-RJ result, source and reason in words (PS3.8 Table 9-21): pure."""

from __future__ import annotations

_RESULTS = {1: "permanent", 2: "transient"}
_SOURCES = {
    1: "service-user",
    2: "service-provider (ACSE)",
    3: "service-provider (presentation)",
}
_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def describe_rejection(result: int | None, source: int | None, reason: int | None) -> str:
    """E.g. ``rejected (permanent) by service-user: called AE title not recognised``."""
    result_word = _RESULTS.get(result or 0, f"result {result}")
    source_word = _SOURCES.get(source or 0, f"source {source}")
    reason_word = _REASONS.get((source or 0, reason or 0), f"reason {reason}")
    return f"rejected ({result_word}) by {source_word}: {reason_word}"
