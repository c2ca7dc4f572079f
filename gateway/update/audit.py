"""The update audit trail: every check, download, install, commit and rollback, one JSON line each.

It is the operator audit log's format (gateway/audit.py: fsync'd appends, torn lines skipped)
in its own file, ``<state_dir>/update/update.jsonl``, so fleet tooling can collect update
history without the operator actions. Records carry versions, target names, hashes and results;
never patient data (there is none on this path).

Actions: ``update.check``, ``update.download`` (this package's client), ``update.install``,
``update.commit``, ``update.rollback`` (the installer). ``target`` is ``release:<version>``, or
``repository`` for a check that found nothing to offer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.audit import AuditLog, AuditRecord
from gateway.clock import Clock

UPDATE_AUDIT_FILE = "update.jsonl"


class UpdateAudit:
    """Appends update events for one actor (``timer``, ``cli:<login>``) to update.jsonl."""

    def __init__(self, state_dir: Path, clock: Clock, actor: str) -> None:
        self.log = AuditLog(state_dir / "update" / UPDATE_AUDIT_FILE, clock)
        self.actor = actor

    def record(
        self, action: str, version: str | None, result: str, details: Mapping[str, Any]
    ) -> AuditRecord:
        """Append one event: ``result`` is ``ok``, ``none``, ``refused`` or ``failed``."""
        target = f"release:{version}" if version else "repository"
        return self.log.append(self.actor, action, target, {"result": result, **details})

    def read(self, limit: int = 100) -> list[AuditRecord]:
        """The last ``limit`` events, oldest first."""
        return self.log.read(limit)
