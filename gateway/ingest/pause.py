"""Why one source's ingest is paused, logged when that changes and never at each attempt.

Two kinds of pause, both leaving the input where it is (drop folder, device):

* the spool refused the room (:meth:`gateway.spool.store.Spool.room_for`): the queue limit, or
  the state file system below its low-water mark, read-only or faulted. It ends when the spool
  gives room again;
* a write of the state storage failed while the input was handled (the grouping database, the
  staging file, the queue, the quarantine: :mod:`gateway.storagefault`). It ends only when an
  input has been taken again (queued or quarantined): the spool's room alone does not prove
  that the storage takes writes, and a pause that ended and began again at every file would
  log two lines per attempt.

Pure bookkeeping: the intake says what happened, this decides what to log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.logsetup import event
from gateway.spool.space import Room
from gateway.storagefault import StorageNotReadyError


@dataclass(frozen=True)
class PauseEvents:
    """The log events of one kind of source."""

    limit_paused: str  # the queue limit (max_queue_bytes)
    disk_paused: str  # the state storage: low, full, read-only, failing
    resumed: str


FOLDER_EVENTS = PauseEvents(
    "queue full: ingest paused",
    "state storage: ingest paused",
    "queue has room: ingest resumed",
)
SERIAL_EVENTS = PauseEvents(
    "queue full: device messages refused",
    "state storage: device messages refused",
    "queue has room: device messages taken again",
)


@dataclass(frozen=True)
class _Pause:
    key: str  # what kind of pause: a change of key is a new state
    reason: str
    disk: bool
    storage_error: bool  # ended only by an input taken


class IngestPause:
    """One source's pause state; logs each transition once."""

    def __init__(self, log: logging.Logger, source: str, events: PauseEvents) -> None:
        self._log = log
        self._source = source
        self._events = events
        self._pause: _Pause | None = None

    @property
    def paused(self) -> bool:
        """True while ingest of this source is paused."""
        return self._pause is not None

    @property
    def reason(self) -> str:
        """Why it is paused ("" when it is not)."""
        return "" if self._pause is None else self._pause.reason

    def room(self, room: Room) -> bool:
        """The spool's answer before an input is handled; True: go ahead."""
        if not room.ok:
            self._enter(_Pause(_key(room.reason), room.reason, room.disk, storage_error=False))
            return False
        if self._pause is not None and not self._pause.storage_error:
            self._leave()
        return True

    def storage_failed(self, exc: StorageNotReadyError) -> None:
        """A write of the state storage failed while an input was handled; it was kept."""
        self._enter(_Pause(f"state storage {exc.fault}", str(exc), disk=True, storage_error=True))

    def taken(self) -> None:
        """An input was queued or quarantined: whatever paused ingest is over."""
        if self._pause is not None:
            self._leave()

    def _enter(self, pause: _Pause) -> None:
        if self._pause is not None and self._pause.key == pause.key:
            self._pause = pause  # same state, fresher numbers: not logged again
            return
        event(
            self._log,
            logging.ERROR,
            self._events.disk_paused if pause.disk else self._events.limit_paused,
            source=self._source,
            reason=pause.reason,
        )
        self._pause = pause

    def _leave(self) -> None:
        event(self._log, logging.INFO, self._events.resumed, source=self._source)
        self._pause = None


def _key(reason: str) -> str:
    """The kind of a refusal: its reason without the numbers in brackets."""
    return reason.split(" (", 1)[0]
