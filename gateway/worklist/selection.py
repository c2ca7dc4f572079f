"""The procedure selected for the room: one worklist step that files are bound to first.

Kept in one small JSON file under ``state_dir`` (:func:`selection_path`), replaced atomically
(temporary file, fsync, rename, fsync of the folder), so the CLI can write it while the daemon
reads it: a reader sees the old or the new selection, never half of one, and a power cut keeps
the last one written. The file holds the item key, the accession number, when and by whom;
no patient name or ID. A selection older than its lifetime, or stamped in the future (the clock
went back, so its age is unknown), counts as no selection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.clock import Clock
from gateway.logsetup import event
from gateway.spool.durable import fsync_dir, temp_sibling
from gateway.worklist.item import WorklistItem

FILE_NAME = "room-selection.json"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 16 * 1024
FUTURE_SLACK_SECONDS = 60.0  # small clock steps (NTP) do not void a selection

log = logging.getLogger(__name__)


def selection_path(state_dir: Path) -> Path:
    """Where the daemon and the CLI keep the room's selection."""
    return state_dir / FILE_NAME


@dataclass(frozen=True)
class Selection:
    """The selected scheduled procedure step, as recorded when it was selected."""

    item_key: str
    accession_number: str
    selected_at: float  # wall-clock epoch seconds
    by: str  # who selected it, e.g. "cli:alice"


class RoomSelection:
    """Reads and writes the room's selection; every call goes to the file (another process)."""

    def __init__(self, path: Path, clock: Clock, expires_minutes: float = 240.0) -> None:
        if expires_minutes <= 0:
            raise ValueError("expires_minutes must be positive")
        self.path = path
        self._clock = clock
        self._lifetime = expires_minutes * 60.0
        self._unreadable_logged = False

    def select(self, item: WorklistItem, by: str) -> Selection:
        """Make ``item`` the room's procedure from now on; durable when this returns."""
        chosen = Selection(item.key, item.accession_number, self._clock.now(), by)
        self._write({"selection": asdict(chosen)}, by)
        event(log, logging.INFO, "procedure selected", item_key=chosen.item_key, by=by)
        return chosen

    def clear(self, by: str) -> None:
        """Forget the selection; durable when this returns."""
        self._write({"selection": None}, by)
        event(log, logging.INFO, "procedure selection cleared", by=by)

    def current(self) -> Selection | None:
        """The selection, or None when there is none, it expired, or the file is unreadable."""
        recorded = self.recorded()
        if recorded is None:
            return None
        age = self._clock.now() - recorded.selected_at
        if age > self._lifetime or age < -FUTURE_SLACK_SECONDS:
            return None
        return recorded

    def recorded(self) -> Selection | None:
        """What the file says, expired or not (for the operator's 'procedure show')."""
        try:
            with self.path.open("rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        try:
            return _parse(raw)
        except ValueError as exc:
            if not self._unreadable_logged:
                event(log, logging.ERROR, "room selection unreadable; ignored", reason=str(exc))
                self._unreadable_logged = True
            return None

    def _write(self, body: dict[str, Any], by: str) -> None:
        record = {"version": FORMAT_VERSION, "changed_at": self._clock.now(), "changed_by": by}
        record.update(body)
        data = json.dumps(record, sort_keys=True).encode("utf-8")
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(self.path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            _own_like_folder(tmp, folder)
            tmp.replace(self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(folder)
        self._unreadable_logged = False


def _own_like_folder(path: Path, folder: Path) -> None:
    # The CLI may run as root (sudo) while the daemon runs as its own user: a root-owned 0640
    # file would lock the daemon out, so the file takes the state folder's owner.
    if os.geteuid() != 0:
        return
    st = folder.stat()
    os.chown(path, st.st_uid, st.st_gid)


def _parse(raw: bytes) -> Selection | None:
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError("file too large")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict) or record.get("version") != FORMAT_VERSION:
        raise ValueError("not a selection record of a known version")
    chosen = record.get("selection")
    if chosen is None:
        return None
    if not isinstance(chosen, dict):
        raise ValueError("selection is not an object")
    try:
        item_key, accession, at, by = (
            chosen["item_key"],
            chosen["accession_number"],
            chosen["selected_at"],
            chosen["by"],
        )
    except KeyError as exc:
        raise ValueError(f"selection lacks {exc.args[0]}") from exc
    if not (
        isinstance(item_key, str)
        and isinstance(accession, str)
        and isinstance(by, str)
        and isinstance(at, int | float)
        and not isinstance(at, bool)
    ):
        raise ValueError("selection has a value of the wrong type")
    return Selection(item_key, accession, float(at), by)
