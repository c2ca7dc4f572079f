"""Resolve a held object: point it at a rewritten payload and release it, or discard it.

Both operations keep the spool's durability argument (docs/architecture.md): a file is durable
before any row names it, and a file is removed only after the commit that stops naming it.

rebind: the new payload is fsync'd and renamed into objects/ (its folder fsync'd); one synced
transaction points the object at it, updates its identity and moves its 'held' deliveries to
'pending'; then the old payload is removed. A crash before the commit leaves the held object
with its old payload (the new file is an orphan that recovery removes); a crash after it leaves
the pending object with its new payload (the old file is the orphan). Never neither, and since
a held delivery is never claimed, the old content can never have been sent.

discard: the payload is first linked (or copied) durably into ``spool/discarded/``, then one
transaction marks the held deliveries 'failed' with failure class "discarded" and the reason,
and unlinks the payload from the row; then the objects/ name is removed. A discarded object
keeps its row (``queue show``) until ``queue purge``; its file stays in discarded/ until an
engineer deletes it. Because the row no longer names a payload, ``queue retry`` (even
``--all-failed``) cannot send it by mistake. Nothing is deleted silently.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import uuid
from pathlib import Path

from gateway.convert.coerce import RewriteFacts
from gateway.logsetup import event
from gateway.spool import durable
from gateway.spool.entries import ObjectInfo
from gateway.spool.recovery import NO_DESTINATION
from gateway.spool.report import show
from gateway.spool.store import Spool
from gateway.sqltxn import transaction

DISCARDED = "discarded"  # the failure class of a discarded object's deliveries
DISCARD_PREFIX = "discarded: "
MAX_REASON_CHARS = 200

# An object is held for reconciliation when it still has its payload, a hold reason other than
# "no destination" (that one resolves itself when a destination is configured), and no delivery
# that left 'held' (so no destination can have received its present content).
_HELD_WHERE = """
    o.payload IS NOT NULL AND o.held_reason IS NOT NULL AND o.held_reason != ?
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.object_id = o.id AND d.state != 'held')
"""


class NotHeldError(LookupError):
    """The object is unknown or not held (already released, sent or discarded); nothing changed."""


class HeldObjects:
    """Operations on held objects of one open Spool (the daemon's or an operator tool's)."""

    def __init__(self, spool: Spool, *, logger: logging.Logger | None = None) -> None:
        self._spool = spool
        self._log = logger or logging.getLogger("gateway.spool.rebind")
        self.discarded_dir = spool.root / "discarded"

    def list_held(self, limit: int = 100, offset: int = 0) -> list[ObjectInfo]:
        """Held objects, oldest first: ``limit`` of them from ``offset``."""
        # The spool is in this package; its connection and lock are shared on purpose.
        with self._spool._db() as conn:
            ids = [
                int(r[0])
                for r in conn.execute(
                    f"SELECT o.id FROM objects o WHERE {_HELD_WHERE}"  # noqa: S608
                    " ORDER BY o.id LIMIT ? OFFSET ?",
                    (NO_DESTINATION, max(0, limit), max(0, offset)),
                )
            ]
            found = [show(conn, i, self._spool.objects_dir) for i in ids]
        return [info for info in found if info is not None]

    def count_held(self) -> int:
        """How many objects list_held has in all."""
        with self._spool._db() as conn:
            return int(
                conn.execute(
                    f"SELECT COUNT(*) FROM objects o WHERE {_HELD_WHERE}",  # noqa: S608
                    (NO_DESTINATION,),
                ).fetchone()[0]
            )

    def get(self, object_id: int) -> ObjectInfo:
        """The held object; NotHeldError when it is unknown or not held."""
        with self._spool._db() as conn:
            if not _is_held(conn, object_id):
                raise NotHeldError(_not_held_text(conn, object_id))
            info = show(conn, object_id, self._spool.objects_dir)
        assert info is not None
        return info

    def rebind(
        self, object_id: int, new_payload: Path, facts: RewriteFacts, by: str, what: str
    ) -> int:
        """Replace a held object's payload with ``new_payload`` and release it; returns deliveries.

        ``new_payload`` is a complete file on the spool's filesystem (e.g. in staging/); it is
        consumed whether or not the rebind succeeds. ``by`` and ``what`` are logged, so they
        must hold no patient data (an actor name, a worklist key). The SOP Instance UID must not
        change: the instance was never sent, so it is still the same instance.
        """
        spool = self._spool
        name = f"{uuid.uuid4().hex}.dcm"
        target = spool.objects_dir / name
        with durable.spool_lock(spool.root):
            try:
                durable.fsync_file(new_payload)
                new_payload.rename(target)  # never replaces: the name is fresh
                durable.fsync_dir(spool.objects_dir)
            except BaseException:
                new_payload.unlink(missing_ok=True)
                raise
            try:
                old_name, destinations = self._commit_rebind(object_id, name, facts)
            except BaseException:
                target.unlink(missing_ok=True)  # never named by a committed row
                raise
        # Not synced: should a power cut bring the old file back, recovery removes it.
        _unlink_quietly(spool.objects_dir / old_name, self._log)
        spool._wakeups.notify(destinations)
        event(
            self._log,
            logging.INFO,
            "held object rebound",
            object_id=object_id,
            sop_instance_uid=facts.sop_instance_uid,
            by=by,
            what=what,
            deliveries=len(destinations),
        )
        return len(destinations)

    def _commit_rebind(
        self, object_id: int, name: str, facts: RewriteFacts
    ) -> tuple[str, list[str]]:
        now = self._spool._clock.now()
        with self._spool._db() as conn, transaction(conn):
            if not _is_held(conn, object_id):
                raise NotHeldError(_not_held_text(conn, object_id))
            old_name, uid = conn.execute(
                "SELECT payload, sop_instance_uid FROM objects WHERE id = ?", (object_id,)
            ).fetchone()
            if uid != facts.sop_instance_uid:
                raise ValueError("a rebound object must keep its SOP Instance UID")
            destinations = [
                str(r[0])
                for r in conn.execute(
                    "SELECT destination FROM deliveries WHERE object_id = ? AND state = 'held'",
                    (object_id,),
                )
            ]
            conn.execute(
                """
                UPDATE objects SET payload = ?, size = ?, sop_class_uid = ?,
                    transfer_syntax_uid = ?, study_instance_uid = ?, held_reason = ?
                WHERE id = ?
                """,
                (
                    name,
                    facts.size,
                    facts.sop_class_uid,
                    facts.transfer_syntax_uid,
                    facts.study_instance_uid,
                    # With no delivery yet, the object waits for a destination like any other.
                    None if destinations else NO_DESTINATION,
                    object_id,
                ),
            )
            conn.execute(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?"
                " WHERE object_id = ? AND state = 'held'",
                (now, object_id),
            )
        return str(old_name), destinations

    def discard(self, object_id: int, reason: str, by: str) -> Path:
        """Take a held object out of the queue for good; returns where its file is kept.

        ``reason`` is stored with the deliveries (``queue show``); it is not logged.
        """
        text = check_reason(reason)
        spool = self._spool
        with spool._db() as conn:
            if not _is_held(conn, object_id):
                raise NotHeldError(_not_held_text(conn, object_id))
            payload = conn.execute(
                "SELECT payload FROM objects WHERE id = ?", (object_id,)
            ).fetchone()[0]
        self.discarded_dir.mkdir(parents=True, exist_ok=True)
        kept = self.discarded_dir / f"{object_id}.dcm"
        # No lock needed: recovery never touches discarded/, and the row still names the payload.
        _keep_copy(spool.objects_dir / str(payload), kept)
        now = spool._clock.now()
        with spool._db() as conn, transaction(conn):
            if not _is_held(conn, object_id):  # another operator acted meanwhile
                with contextlib.suppress(FileNotFoundError):
                    kept.unlink()
                raise NotHeldError(_not_held_text(conn, object_id))
            conn.execute(
                """
                UPDATE deliveries SET state = 'failed', failure_class = ?, last_error = ?,
                    last_error_at = ?, status = NULL
                WHERE object_id = ? AND state = 'held'
                """,
                (DISCARDED, DISCARD_PREFIX + text, now, object_id),
            )
            conn.execute(
                "UPDATE objects SET payload = NULL, held_reason = ? WHERE id = ?",
                (DISCARD_PREFIX + text, object_id),
            )
        _unlink_quietly(spool.objects_dir / str(payload), self._log)
        event(self._log, logging.INFO, "held object discarded", object_id=object_id, by=by)
        return kept


def check_reason(reason: str) -> str:
    """The reason, stripped; ValueError when empty, too long or with control characters."""
    text = reason.strip()
    if not text:
        raise ValueError("a reason is required")
    if len(text) > MAX_REASON_CHARS:
        raise ValueError(f"reason longer than {MAX_REASON_CHARS} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise ValueError("reason contains control characters")
    return text


def _is_held(conn: sqlite3.Connection, object_id: int) -> bool:
    row = conn.execute(
        f"SELECT 1 FROM objects o WHERE o.id = ? AND {_HELD_WHERE}",  # noqa: S608
        (object_id, NO_DESTINATION),
    ).fetchone()
    return row is not None


def _not_held_text(conn: sqlite3.Connection, object_id: int) -> str:
    row = conn.execute(
        "SELECT payload, held_reason FROM objects WHERE id = ?", (object_id,)
    ).fetchone()
    if row is None:
        return f"object {object_id} is not in the queue"
    states = sorted(
        {
            str(r[0])
            for r in conn.execute("SELECT state FROM deliveries WHERE object_id = ?", (object_id,))
        }
    )
    if row[1] == NO_DESTINATION:
        return f"object {object_id} waits for a destination, not for a patient"
    if row[0] is None:
        return f"object {object_id} is no longer held (payload gone; {', '.join(states)})"
    return f"object {object_id} is not held (deliveries: {', '.join(states) or 'none'})"


def _keep_copy(src: Path, dst: Path) -> None:
    """Give ``src``'s data the durable name ``dst`` too (a hard link, else a synced copy)."""
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()  # left by a discard that crashed before its commit
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}:
            raise
        tmp = durable.temp_sibling(dst)
        try:
            durable.synced_copy(src, tmp)
            tmp.rename(dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    durable.fsync_dir(dst.parent)
    durable.fsync_dir(dst.parent.parent)


def _unlink_quietly(path: Path, log: logging.Logger) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # recovery removes it at the next open
        event(log, logging.WARNING, "cannot remove replaced payload", error=str(exc))
