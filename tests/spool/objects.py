"""Staged objects for spool tests (also used by the crash child, so no pytest import)."""

from __future__ import annotations

import hashlib
import uuid

from gateway.convert.result import ConvertedObject
from gateway.spool.store import Spool

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def new_uid() -> str:
    """A unique UID (2.25 form)."""
    return f"2.25.{uuid.uuid4().int}"


def stage(
    spool: Spool,
    data: bytes = b"DICM payload",
    *,
    uid: str | None = None,
    held_reason: str | None = None,
) -> ConvertedObject:
    """Write ``data`` into staging as the converter would and describe it."""
    path = spool.staging_path()
    path.write_bytes(data)
    return ConvertedObject(
        path=path,
        sop_class_uid=SECONDARY_CAPTURE,
        sop_instance_uid=uid or new_uid(),
        transfer_syntax_uid=EXPLICIT_LE,
        study_instance_uid="2.25.1",
        source_sha256=hashlib.sha256(data).hexdigest(),
        kind="jpeg",
        held_reason=held_reason,
    )
