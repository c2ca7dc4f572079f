"""The serial line: line settings, reads, writes, loss and reopen with backoff (fakes, ptys)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from gateway.clock import FakeClock
from gateway.config import SerialIngest
from gateway.ingest.serial.port import (
    PortLostError,
    ReopenBackoff,
    SerialLike,
    SerialPort,
    WriteStalledError,
    open_serial,
)
from gateway.simulate.socat import PtyPair
from tests.peers import require_tool


def serial_config(port: str = "/dev/fake", **kw: object) -> SerialIngest:
    return SerialIngest.model_validate({"name": "dev", "port": port, "profile": "line-kv", **kw})


class FakeSerial:
    """Duck-types the part of pyserial the port uses; scripted reads, recorded writes."""

    def __init__(self) -> None:
        self.timeout: float | None = 0.1
        self.incoming = bytearray()
        self.written = bytearray()
        self.flushes = 0
        self.closed = False
        self.fail_read: Exception | None = None
        self.fail_write: Exception | None = None

    @property
    def in_waiting(self) -> int:
        return len(self.incoming)

    def read(self, size: int = 1) -> bytes:
        if self.fail_read is not None:
            raise self.fail_read
        data = bytes(self.incoming[:size])
        del self.incoming[:size]
        return data

    def write(self, data: bytes, /) -> int:
        if self.fail_write is not None:
            raise self.fail_write
        self.written += data
        return len(data)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class FakeOpener:
    """Hands out FakeSerial ports; ``unplugged`` makes opening fail as a missing device does."""

    def __init__(self) -> None:
        self.unplugged = False
        self.ports: list[FakeSerial] = []

    def __call__(self, cfg: SerialIngest, timeout: float) -> SerialLike:
        if self.unplugged:
            raise serial.SerialException(f"could not open port {cfg.port}: No such file")
        port = FakeSerial()
        port.timeout = timeout
        self.ports.append(port)
        return port

    @property
    def current(self) -> FakeSerial:
        return self.ports[-1]


def test_reopen_delays_double_up_to_the_configured_maximum() -> None:
    backoff = ReopenBackoff(5.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_unavailable_port_is_logged_once_then_recovery_with_its_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    opener = FakeOpener()
    opener.unplugged = True
    port = SerialPort(serial_config(), clock, logging.getLogger("t.port"), opener)
    caplog.set_level(logging.DEBUG, "t.port")
    for _ in range(4):
        assert not port.open()
        clock.advance(port.retry_delay())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    opener.unplugged = False
    assert port.open()
    back = [r for r in caplog.records if r.getMessage() == "serial port back"]
    assert len(back) == 1
    assert back[0].down_seconds == 0.5 + 1.0 + 2.0 + 4.0  # type: ignore[attr-defined]
    assert not port.reopened  # never open before: the engine has nothing to forget


def test_read_failure_closes_the_port_and_reopening_is_flagged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    opener = FakeOpener()
    port = SerialPort(serial_config(), FakeClock(), logging.getLogger("t.port"), opener)
    assert port.open()
    first = opener.current
    first.incoming += b"abc"
    assert port.read(4096, 0.1) == b"abc"
    first.fail_read = serial.SerialException(
        "device reports readiness to read but returned no data"
    )
    with pytest.raises(PortLostError):
        port.read(4096, 0.1)
    assert first.closed and not port.is_open
    assert port.open()
    assert port.reopened and opener.current is not first


def test_reads_are_bounded_and_the_timeout_follows_the_caller() -> None:
    opener = FakeOpener()
    port = SerialPort(serial_config(), FakeClock(), logging.getLogger("t.port"), opener)
    port.open()
    opener.current.incoming += bytes(10_000)
    assert len(port.read(4096, 0.05)) == 4096
    assert opener.current.timeout == 0.05
    assert port.read(4096, 0.05) != b""


def test_write_is_flushed_and_a_stalled_write_keeps_the_port_open() -> None:
    opener = FakeOpener()
    port = SerialPort(serial_config(), FakeClock(), logging.getLogger("t.port"), opener)
    port.open()
    port.write(b"\x06")
    assert opener.current.written == b"\x06" and opener.current.flushes == 1
    opener.current.fail_write = serial.SerialTimeoutException("Write timeout")
    with pytest.raises(WriteStalledError):
        port.write(b"\x15")
    assert port.is_open
    opener.current.fail_write = OSError(5, "Input/output error")
    with pytest.raises(PortLostError):
        port.write(b"\x15")
    assert not port.is_open


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[PtyPair]:
    require_tool("socat")
    pair = PtyPair(tmp_path / "gw", tmp_path / "dev").start()
    yield pair
    pair.stop()


@pytest.mark.peers
def test_line_settings_reach_the_real_port(ptys: PtyPair) -> None:
    cfg = serial_config(
        str(ptys.a), baudrate=19200, bytesize=7, parity="even", stopbits=2, flow_control="xonxoff"
    )
    port = open_serial(cfg, 0.1)
    try:
        assert isinstance(port, serial.Serial)
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (19200, 7, "E", 2)
        assert port.xonxoff and not port.rtscts
    finally:
        port.close()


@pytest.mark.peers
def test_unplugged_pty_is_lost_and_reopened_under_the_same_name(ptys: PtyPair) -> None:
    port = SerialPort(serial_config(str(ptys.a)), FakeClock(), logging.getLogger("t.port"))
    assert port.open()
    with serial.Serial(str(ptys.b), timeout=1) as device:
        device.write(b"HR: 72 /min\n")
        got = b""
        while not got.endswith(b"\n"):
            got += port.read(4096, 0.5)
        assert got == b"HR: 72 /min\n"
        port.write(b"\x06")
        assert device.read(1) == b"\x06"
    ptys.stop()  # the adapter is pulled out
    with pytest.raises(PortLostError):
        for _ in range(50):
            port.read(4096, 0.1)
    assert not port.open()  # the node is gone until it comes back
    ptys.start()
    assert port.open() and port.reopened
    with serial.Serial(str(ptys.b), timeout=1) as device:
        device.write(b"x")
        assert port.read(1, 1.0) == b"x"
    port.close()


def test_socket_url_is_a_port_too() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        accepted: list[socket.socket] = []
        waiter = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
        waiter.start()
        port = SerialPort(serial_config(url), FakeClock(), logging.getLogger("t.port"))
        assert port.open()
        waiter.join(5)
        conn = accepted[0]
        try:
            conn.sendall(b"GLU: 5.4 mmol/L\n")
            got = b""
            while not got.endswith(b"\n"):
                got += port.read(4096, 0.5)
            assert got == b"GLU: 5.4 mmol/L\n"
            conn.close()
            with pytest.raises(PortLostError):
                for _ in range(50):
                    port.read(4096, 0.1)
        finally:
            conn.close()
            port.close()
