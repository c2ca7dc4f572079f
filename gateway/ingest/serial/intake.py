"""Takes a complete device message into the queue: bind, convert, check room, enqueue durably.

The reader acknowledges the message to the device only when this returns True, so True means
every object of the message is durably queued, or the message was durably quarantined (it can
never convert; the device must not keep resending it). False means "not now": the queue is full
or the disk failed, and the device is refused and sends again later. A resend converts to the
same SOP Instance UIDs, so objects queued before a failure are recognised as duplicates.

A fault of the box's own storage (:mod:`gateway.storagefault`) met anywhere on the way is
never the message's fault: it is refused (the device resends), never quarantined for it, and
the pause is logged when it starts and when it ends (:mod:`gateway.ingest.pause`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway.clock import Clock
from gateway.convert.result import ConversionError, ConvertedObject
from gateway.ingest.intake import QuarantineLike, SpoolLike, record_queued
from gateway.ingest.pause import SERIAL_EVENTS, IngestPause
from gateway.ingest.serial.message import DeviceMessage
from gateway.logsetup import event
from gateway.spool.entries import ObjectSource, SourceChannel
from gateway.storagefault import StorageNotReadyError, as_not_ready
from gateway.worklist.binding import Binder, Binding

CARRIER = "device message"  # how held reasons name where the message's identity came from


class SerialConverterLike(Protocol):
    """What intake needs of gateway.convert.serialconv.SerialConverter."""

    def convert(
        self, message: DeviceMessage, binding: Binding, staging: Callable[[], Path]
    ) -> list[ConvertedObject]: ...


class SerialIntake:
    """The serial reader's sink: True when the message is safe (queued or quarantined)."""

    def __init__(
        self,
        *,
        source: str,
        converter: SerialConverterLike,
        spool: SpoolLike,
        quarantine: QuarantineLike,
        binder: Binder,
        clock: Clock,
        logger: logging.Logger,
        port: str | None = None,
    ) -> None:
        """``port`` is the line's device path or pyserial URL, recorded as objects' source."""
        self.source = source
        self.port = port
        self.converter = converter
        self.spool = spool
        self.quarantine = quarantine
        self.binder = binder
        self.clock = clock
        self.log = logger
        self.full = False
        self.pause = IngestPause(logger, source, SERIAL_EVENTS)
        self.counts = {"queued": 0, "duplicate": 0, "held": 0, "quarantined": 0, "refused": 0}

    def __call__(self, message: DeviceMessage) -> bool:
        """Queue every object of ``message``; see the module docstring for what True means."""
        if not self._room_for(len(message.raw)):
            return self._refuse()
        binding = self.binder.bind(message.identity, None, carrier=CARRIER)
        try:
            objects = self.converter.convert(message, binding, self.spool.staging_path)
        except Exception as exc:  # noqa: BLE001 - sorted below: storage, input or bug
            return self._conversion_failed(message, exc)
        try:
            return self._enqueue_all(message, binding, objects)
        finally:
            for obj in objects:
                with contextlib.suppress(FileNotFoundError):
                    obj.path.unlink()  # enqueue moved it away on success; else a leftover

    def _conversion_failed(self, message: DeviceMessage, exc: Exception) -> bool:
        """Quarantine what can never convert; refuse (the device resends) what may later."""
        not_ready = as_not_ready(exc, "converting a device message")
        if not_ready is not None:
            return self._storage_failed(not_ready)
        if isinstance(exc, ConversionError):
            return self._quarantine(message, exc.reason)
        if isinstance(exc, (MemoryError, RecursionError)):
            return self._quarantine(message, f"message too large to convert ({type(exc).__name__})")
        if isinstance(exc, OSError):
            # Reading or writing failed, not for the message's content: refuse; it is resent.
            event(
                self.log,
                logging.ERROR,
                "cannot convert now",
                source=self.source,
                error=type(exc).__name__,
            )
            return self._refuse()
        # A converter bug must not lose the message.
        return self._quarantine(message, f"internal conversion error ({type(exc).__name__})")

    def _storage_failed(self, exc: StorageNotReadyError) -> bool:
        self.spool.report_storage_fault(exc)
        self.pause.storage_failed(exc)
        return self._refuse()

    def _enqueue_all(
        self, message: DeviceMessage, binding: Binding, objects: list[ConvertedObject]
    ) -> bool:
        total = sum(_size(obj.path) for obj in objects)
        if not self._room_for(total):
            return self._refuse()
        for obj in objects:
            origin = ObjectSource(
                channel=SourceChannel.SERIAL,
                source=self.source,
                sha256=obj.source_sha256,
                arrived_at=message.received_at,
                size=len(message.raw),
                port=self.port,
            )
            try:
                result = self.spool.enqueue(obj, self.source, origin)
            except Exception as exc:  # noqa: BLE001 - not queued: refuse, the device resends
                not_ready = as_not_ready(exc, "queueing a device message")
                if not_ready is not None:
                    return self._storage_failed(not_ready)
                event(
                    self.log,
                    logging.ERROR,
                    "enqueue failed",
                    source=self.source,
                    error=type(exc).__name__,
                )
                return self._refuse()
            what = "already queued" if result.duplicate else "queued"
            record_queued(
                self.counts,
                self.log,
                what,
                obj,
                result,
                binding,
                source=self.source,
                sequence=message.sequence,
            )
        self.pause.taken()
        return True

    def _room_for(self, size: int) -> bool:
        room = self.pause.room(self.spool.room_for(size))
        self.full = not room
        return room

    def _refuse(self) -> bool:
        self.counts["refused"] += 1
        return False

    def _quarantine(self, message: DeviceMessage, reason: str) -> bool:
        """Keep the raw bytes with the reason; True (ACK) once they are durably aside."""
        raw = self.spool.staging_path(f".{self.source}.raw")
        try:
            _write_durably(raw, message.raw)
            self.quarantine.put(raw, self.source, reason)
        except Exception as exc:  # noqa: BLE001 - not kept: refuse, the device resends
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()
            not_ready = as_not_ready(exc, "quarantining a device message")
            if not_ready is not None:
                return self._storage_failed(not_ready)
            event(
                self.log,
                logging.ERROR,
                "cannot quarantine message",
                source=self.source,
                error=type(exc).__name__,
            )
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()
            return self._refuse()
        self.pause.taken()
        self.counts["quarantined"] += 1
        event(
            self.log,
            logging.WARNING,
            "message quarantined",
            source=self.source,
            sequence=message.sequence,
            reason=reason,
            size=len(message.raw),
        )
        return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
