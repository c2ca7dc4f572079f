"""The verdict table on python-tuf's refresh errors (gateway/update/refusal.py), row by row."""

from __future__ import annotations

import pytest
from tuf.api import exceptions as tuf_errors
from tuf.api.serialization import DeserializationError

from gateway.update.refusal import MetadataVerdict, classify_refresh_error

ROWS: list[tuple[Exception, str]] = [
    (tuf_errors.ExpiredMetadataError("timestamp.json is expired"), "expired"),
    (tuf_errors.BadVersionNumberError("New timestamp version 1 must be >= 2"), "replayed"),
    (tuf_errors.EqualVersionNumberError(), "replayed"),
    (tuf_errors.UnsignedMetadataError("root was signed by 0/1 keys"), "tampered"),
    (tuf_errors.LengthOrHashMismatchError("Observed length 770 != 771"), "tampered"),
    (tuf_errors.DownloadLengthMismatchError("Downloaded 835 bytes exceeding 771"), "tampered"),
    (DeserializationError("Failed to deserialize JSON"), "tampered"),
    (tuf_errors.RepositoryError("Role x was delegated but is not part of snapshot"), "invalid"),
    (tuf_errors.DownloadHTTPError("HTTP 404", 404), "unreachable"),
    (tuf_errors.DownloadHTTPError("HTTP 503", 503), "unreachable"),
    (tuf_errors.SlowRetrievalError("no answer in time"), "unreachable"),
    (tuf_errors.DownloadError("connection refused"), "unreachable"),
]


@pytest.mark.parametrize(("error", "kind"), ROWS, ids=[type(e).__name__ for e, _ in ROWS])
def test_each_refresh_error_has_its_verdict(error: Exception, kind: str) -> None:
    verdict = classify_refresh_error(error)
    assert verdict is not None
    assert verdict.kind == kind
    assert verdict.refused is (kind != "unreachable")
    assert str(error) in verdict.reason  # python-tuf's own words are kept


def test_tampering_is_never_try_later() -> None:
    # A length changed, a hash or a signature that does not match: all the same verdict.
    forms = [e for e, kind in ROWS if kind == "tampered"]
    assert len(forms) == 4
    verdicts = [classify_refresh_error(e) for e in forms]
    assert all(isinstance(v, MetadataVerdict) and v.refused for v in verdicts)


def test_an_error_that_is_not_python_tufs_is_not_classified() -> None:
    assert classify_refresh_error(OSError("disk full")) is None
    assert classify_refresh_error(ValueError("x")) is None
