"""The operator audit trail: who did what to which object, when; one JSON object a line.

Lives at ``<state_dir>/audit.jsonl``. Every append is fsync'd before it returns, so an action
the operator was told succeeded is on record after a power cut. A line cut short by a crash
(the only damage an append can leave) is skipped when reading. The log may hold object ids,
UIDs, worklist keys and accession numbers; never patient names, IDs or birth dates.

Values are recorded as given (an actor may carry a user name typed at the login form): each
line is written by :func:`gateway.textsafe.json_line`, so no value can end its line or start
another, and texts made from the records (the support bundle's ``audit.txt``) escape again.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.spool.durable import fsync_dir
from gateway.textsafe import json_line

AUDIT_FILE = "audit.jsonl"


@dataclass(frozen=True)
class AuditRecord:
    """One audited action."""

    at: str  # UTC, ISO 8601 with a Z
    actor: str  # "cli:<login>", "api:<user>", ...
    action: str  # e.g. "held.bind_item", "held.discard"
    target: str  # e.g. "object:42"
    details: Mapping[str, Any]


class AuditLog:
    """Append-only JSON-lines file; safe for the daemon and the CLI to append at the same time."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()

    def append(
        self, actor: str, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> AuditRecord:
        """Record one action durably; returns what was written."""
        record = AuditRecord(
            at=_utc_iso(self._clock.now()),
            actor=actor,
            action=action,
            target=target,
            details=dict(details or {}),
        )
        line = json_line(
            {
                "at": record.at,
                "actor": record.actor,
                "action": record.action,
                "target": record.target,
                "details": record.details,
            },
            sort_keys=True,
            default=str,
        )
        data = (line + "\n").encode()
        with self._lock:
            created = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                # One write per line under an exclusive lock: lines from two processes never mix.
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # end a line torn by a crash; ours stays whole
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.path.parent)
        return record

    def read(self, limit: int = 100) -> list[AuditRecord]:
        """The last ``limit`` records, oldest first."""
        if limit <= 0 or not self.path.exists():
            return []
        records: list[AuditRecord] = []
        with self.path.open("rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    continue  # torn by a crash mid-append
                try:
                    fields = json.loads(raw)
                    records.append(
                        AuditRecord(
                            at=str(fields["at"]),
                            actor=str(fields["actor"]),
                            action=str(fields["action"]),
                            target=str(fields["target"]),
                            details=dict(fields.get("details") or {}),
                        )
                    )
                except (ValueError, KeyError, TypeError):
                    continue
                if len(records) > limit:
                    del records[0]
        return records


def _utc_iso(epoch: float) -> str:
    whole = int(epoch)
    millis = int((epoch - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def cli_actor() -> str:
    """Who runs a command on the box, for the audit log: ``cli:<user>``, the sudo caller first."""
    return f"cli:{os.environ.get('SUDO_USER') or getpass.getuser()}"
