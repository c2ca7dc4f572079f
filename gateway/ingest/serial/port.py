"""One serial line from [[ingest.serial]]: opened through pyserial, reopened when it comes back.

A USB-serial adapter that is unplugged makes reads fail (or its device node vanish); the port
is then closed and reopened with exponential backoff up to ``reopen_max_seconds``. The loss is
logged once at ERROR, the failed attempts at DEBUG, and the recovery at INFO with how long the
line was gone. The caller learns of a reopen (``SerialPort.open`` returns True) so that it can
reset the protocol engine: half a frame from before the loss means nothing after it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import serial

from gateway.clock import Clock
from gateway.config import SerialIngest
from gateway.logsetup import event

WRITE_TIMEOUT = 5.0  # a device holding CTS low (or XOFF) must not stall the port thread forever
FIRST_REOPEN_DELAY = 0.5

PARITY = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}
STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}


class SerialLike(Protocol):
    """What the port needs of a pyserial port object (a fake in unit tests)."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


Opener = Callable[[SerialIngest, float], SerialLike]


class PortLostError(Exception):
    """The line failed (adapter unplugged, pty closed, socket dropped); it was closed. Reopen."""


class WriteStalledError(Exception):
    """A write did not complete within WRITE_TIMEOUT (flow control held); the port stays open."""


def open_serial(cfg: SerialIngest, timeout: float) -> SerialLike:
    """Open the configured port with its line settings and flow control (pyserial URL or path)."""
    port: SerialLike = serial.serial_for_url(
        cfg.port,
        baudrate=cfg.baudrate,
        bytesize=cfg.bytesize,
        parity=PARITY[cfg.parity],
        stopbits=STOPBITS[cfg.stopbits],
        rtscts=cfg.flow_control == "rtscts",
        xonxoff=cfg.flow_control == "xonxoff",
        timeout=timeout,
        write_timeout=WRITE_TIMEOUT,
        # Two gateways (or a gateway and a terminal program) reading one line would each get
        # half of the bytes; a lock makes the second one fail loudly instead.
        exclusive=_is_device_path(cfg.port) or None,
    )
    return port


def _is_device_path(port: str) -> bool:
    return "://" not in port


class ReopenBackoff:
    """Delays between reopen attempts: 0.5 s, doubling, capped at the configured maximum."""

    def __init__(self, maximum: float, first: float = FIRST_REOPEN_DELAY) -> None:
        self.maximum = maximum
        self.first = min(first, maximum)
        self._next = self.first

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the one after it."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """The port opened: the next loss starts again from the first delay."""
        self._next = self.first


class SerialPort:
    """The line of one [[ingest.serial]] source: open, read, write, close, reopen with backoff."""

    def __init__(
        self,
        cfg: SerialIngest,
        clock: Clock,
        logger: logging.Logger,
        opener: Opener = open_serial,
        read_timeout: float = 0.1,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.log = logger
        self.opener = opener
        self.backoff = ReopenBackoff(cfg.reopen_max_seconds)
        self.opens = 0  # successful opens; the first is not a reopen
        self._port: SerialLike | None = None
        self._timeout = read_timeout
        self._lost_at: float | None = None  # monotonic time the line went away
        self._failed_attempts = 0
        self._stalled = False

    @property
    def is_open(self) -> bool:
        """Whether the line is open now."""
        return self._port is not None

    def open(self) -> bool:
        """Try to open the line; True when it opened (call again after ``retry_delay``)."""
        if self._port is not None:
            return True
        try:
            self._port = self.opener(self.cfg, self._timeout)
        except (OSError, serial.SerialException, ValueError) as exc:
            self._open_failed(exc)
            return False
        self.opens += 1
        self.backoff.reset()
        if self._lost_at is not None:
            gone = self.clock.monotonic() - self._lost_at
            event(
                self.log,
                logging.INFO,
                "serial port back",
                source=self.cfg.name,
                port=self.cfg.port,
                down_seconds=round(gone, 1),
                attempts=self._failed_attempts + 1,
            )
        else:
            event(
                self.log, logging.INFO, "serial port open", source=self.cfg.name, port=self.cfg.port
            )
        self._lost_at = None
        self._failed_attempts = 0
        return True

    def _open_failed(self, exc: Exception) -> None:
        self._failed_attempts += 1
        if self._lost_at is None:
            self._lost_at = self.clock.monotonic()
            event(
                self.log,
                logging.ERROR,
                "cannot open serial port; retrying with backoff",
                source=self.cfg.name,
                port=self.cfg.port,
                error=str(exc),
            )
        else:
            event(
                self.log,
                logging.DEBUG,
                "serial port still unavailable",
                source=self.cfg.name,
                attempt=self._failed_attempts,
            )

    def retry_delay(self) -> float:
        """How long to wait before the next ``open`` attempt."""
        return self.backoff.next_delay()

    @property
    def reopened(self) -> bool:
        """True after the line has been opened more than once (the engine must be reset)."""
        return self.opens > 1

    def read(self, max_bytes: int, timeout: float) -> bytes:
        """Bytes that arrived within ``timeout`` (at most ``max_bytes``); b"" when none did."""
        port = self._require()
        try:
            if timeout != self._timeout:
                port.timeout = timeout
                self._timeout = timeout
            data = port.read(1)
            if data and max_bytes > 1:
                waiting = port.in_waiting
                if waiting:
                    data += port.read(min(waiting, max_bytes - 1))
            return data
        except (OSError, serial.SerialException) as exc:
            raise self._lost(exc) from exc

    def write(self, data: bytes) -> None:
        """Write and drain ``data``; WriteStalledError when flow control holds it too long."""
        port = self._require()
        try:
            port.write(data)
            port.flush()
        except serial.SerialTimeoutException as exc:
            if not self._stalled:
                event(self.log, logging.WARNING, "serial write stalled", source=self.cfg.name)
            self._stalled = True
            raise WriteStalledError(str(exc)) from exc
        except (OSError, serial.SerialException) as exc:
            raise self._lost(exc) from exc
        if self._stalled:
            event(self.log, logging.INFO, "serial writes flow again", source=self.cfg.name)
            self._stalled = False

    def close(self) -> None:
        """Close the line (idempotent)."""
        port, self._port = self._port, None
        if port is not None:
            # An unplugged adapter may fail even its close; it is gone either way.
            with contextlib.suppress(OSError, serial.SerialException):
                port.close()

    def _require(self) -> SerialLike:
        if self._port is None:
            raise PortLostError("port is not open")
        return self._port

    def _lost(self, exc: Exception) -> PortLostError:
        self.close()
        self._lost_at = self.clock.monotonic()
        self._failed_attempts = 0
        event(
            self.log,
            logging.ERROR,
            "serial port lost; reopening with backoff",
            source=self.cfg.name,
            port=self.cfg.port,
            error=str(exc),
        )
        return PortLostError(str(exc))
