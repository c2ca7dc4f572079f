"""Read-only views of the queue for status lines, the web panel and the operator CLI."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.spool.entries import (
    DeliveryInfo,
    DeliveryState,
    DestinationStats,
    ObjectInfo,
    ObjectSource,
    SourceChannel,
)

_DELIVERY_FROM = " FROM deliveries d JOIN objects o ON o.id = d.object_id "
_DELIVERY_COLUMNS = (
    """
    d.id, d.object_id, d.destination, d.state, d.attempts, o.size, o.sop_instance_uid, o.source,
    o.enqueued_at, d.next_attempt_at, d.sent_at, d.last_error, d.last_error_at, d.failure_class,
    d.status
"""
    + _DELIVERY_FROM
)


def _delivery(row: Sequence[Any]) -> DeliveryInfo:
    return DeliveryInfo(
        delivery_id=row[0],
        object_id=row[1],
        destination=row[2],
        state=DeliveryState(row[3]),
        attempts=row[4],
        size=row[5],
        sop_instance_uid=row[6],
        source=row[7],
        enqueued_at=row[8],
        next_attempt_at=row[9],
        sent_at=row[10],
        last_error=row[11],
        last_error_at=row[12],
        failure_class=row[13],
        status=row[14],
    )


def list_deliveries(
    conn: sqlite3.Connection,
    state: DeliveryState | None,
    destination: str | None,
    limit: int,
    offset: int = 0,
) -> list[DeliveryInfo]:
    """Deliveries in queue order, optionally of one state and/or destination; one page."""
    where, args = _delivery_filter(state, destination)
    sql = "SELECT " + _DELIVERY_COLUMNS + where + " ORDER BY d.object_id, d.id LIMIT ? OFFSET ?"
    return [_delivery(r) for r in conn.execute(sql, [*args, max(0, limit), max(0, offset)])]


def count_deliveries(
    conn: sqlite3.Connection, state: DeliveryState | None, destination: str | None
) -> int:
    """How many deliveries list_deliveries would give without a limit."""
    where, args = _delivery_filter(state, destination)
    sql = "SELECT COUNT(*)" + _DELIVERY_FROM + where
    return int(conn.execute(sql, args).fetchone()[0])


def _delivery_filter(state: DeliveryState | None, destination: str | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if state is not None:
        where.append("d.state = ?")
        args.append(str(state))
    if destination is not None:
        where.append("d.destination = ?")
        args.append(destination)
    return (" WHERE " + " AND ".join(where) if where else ""), args


def show(conn: sqlite3.Connection, object_id: int, objects_dir: Path) -> ObjectInfo | None:
    """One object and all its deliveries, or None."""
    row = conn.execute(
        """
        SELECT id, sop_class_uid, sop_instance_uid, transfer_syntax_uid, study_instance_uid,
               source_sha256, source, kind, size, enqueued_at, held_reason, payload
        FROM objects WHERE id = ?
        """,
        (object_id,),
    ).fetchone()
    if row is None:
        return None
    deliveries = conn.execute(
        "SELECT " + _DELIVERY_COLUMNS + " WHERE d.object_id = ? ORDER BY d.destination",
        (object_id,),
    ).fetchall()
    return ObjectInfo(
        object_id=row[0],
        sop_class_uid=row[1],
        sop_instance_uid=row[2],
        transfer_syntax_uid=row[3],
        study_instance_uid=row[4],
        source_sha256=row[5],
        source=row[6],
        kind=row[7],
        size=row[8],
        enqueued_at=row[9],
        held_reason=row[10],
        payload=None if row[11] is None else objects_dir / row[11],
        deliveries=tuple(_delivery(d) for d in deliveries),
        sources=sources(conn, object_id),
    )


def sources(conn: sqlite3.Connection, object_id: int) -> tuple[ObjectSource, ...]:
    """Every recorded arrival of one object, first one first."""
    return tuple(
        ObjectSource(
            channel=SourceChannel(r[0]),
            source=r[1],
            sha256=r[2],
            arrived_at=r[3],
            size=r[4],
            file_name=r[5],
            port=r[6],
            calling_ae=r[7],
            peer_address=r[8],
            identity_note=r[9],
            hint_patient_id=r[10],
            hint_accession_number=r[11],
        )
        for r in conn.execute(
            """
            SELECT channel, source, sha256, arrived_at, size, file_name, port, calling_ae,
                   peer_address, identity_note, hint_patient_id, hint_accession
            FROM object_sources WHERE object_id = ? ORDER BY id
            """,
            (object_id,),
        )
    )


def stats(conn: sqlite3.Connection, configured: Sequence[str]) -> dict[str, DestinationStats]:
    """Per destination (configured ones, and removed ones that still have deliveries)."""
    counts: dict[str, dict[DeliveryState, int]] = {
        name: dict.fromkeys(DeliveryState, 0) for name in configured
    }
    for name, state, n in conn.execute(
        "SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state"
    ):
        counts.setdefault(name, dict.fromkeys(DeliveryState, 0))[DeliveryState(state)] = n
    out: dict[str, DestinationStats] = {}
    for name, per_state in counts.items():
        pending_bytes = conn.execute(
            """
            SELECT COALESCE(SUM(o.size), 0) FROM deliveries d JOIN objects o ON o.id = d.object_id
            WHERE d.destination = ? AND d.state IN ('held', 'pending', 'sending')
            """,
            (name,),
        ).fetchone()[0]
        oldest_pending = conn.execute(
            """
            SELECT MIN(o.enqueued_at) FROM deliveries d JOIN objects o ON o.id = d.object_id
            WHERE d.destination = ? AND d.state IN ('pending', 'sending')
            """,
            (name,),
        ).fetchone()[0]
        last_success = conn.execute(
            "SELECT MAX(sent_at) FROM deliveries WHERE destination = ? AND state = 'sent'",
            (name,),
        ).fetchone()[0]
        last_error = conn.execute(
            """
            SELECT last_error, last_error_at FROM deliveries
            WHERE destination = ? AND last_error_at IS NOT NULL
            ORDER BY last_error_at DESC LIMIT 1
            """,
            (name,),
        ).fetchone()
        out[name] = DestinationStats(
            destination=name,
            configured=name in configured,
            counts=per_state,
            oldest_pending_at=oldest_pending,
            bytes_pending=pending_bytes,
            last_success_at=last_success,
            last_error=last_error[0] if last_error else None,
            last_error_at=last_error[1] if last_error else None,
        )
    return out
