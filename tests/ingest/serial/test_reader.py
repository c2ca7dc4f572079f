"""The port thread: engine actions carried out, ACK only after the sink, never dies on input."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import serial

from gateway.clock import FakeClock
from gateway.identity import PatientIdentity
from gateway.ingest.serial.engine import Action, Deliver, Note, Send
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.port import SerialPort
from gateway.ingest.serial.profile import AstmProtocol, DeviceProfile
from gateway.ingest.serial.profiles import load_profile
from gateway.ingest.serial.reader import MAX_READ_WAIT, READ_CHUNK, EngineClock, SerialReader
from tests.ingest.serial.ptyplay import play_over_ptys
from tests.ingest.serial.test_port import FakeOpener, serial_config
from tests.peers import require_tool

ACK, NAK = b"\x06", b"\x15"


class LineEngine:
    """A toy protocol: a line is a message (ACK/NAK after commit), '!' is noise, 'X' a bug."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.started: float | None = None
        self.resets = 0
        self.fed: list[int] = []
        self.committed_calls: list[tuple[int, bool]] = []
        self.tokens = 0

    def feed(self, data: bytes, now: float) -> list[Action]:
        self.fed.append(len(data))
        out: list[Action] = []
        for byte in data:
            if byte == ord("X"):
                raise RuntimeError("engine bug: PATIENT SECRET")
            if byte == ord("!"):
                out.append(Note("noise", "1 byte"))
            elif byte == ord("?"):
                out.append(Note("unmapped_results", "1 kept as text"))
            elif byte == ord("\n"):
                self.tokens += 1
                out.append(Deliver(message(bytes(self.buffer), now, self.tokens), self.tokens))
                self.buffer.clear()
                self.started = None
            else:
                self.buffer.append(byte)
                self.started = self.started if self.started is not None else now
        return out

    def poll(self, now: float) -> list[Action]:
        if self.started is not None and now >= self.started + 1.0:
            self.buffer.clear()
            self.started = None
            return [Note("timeout", "partial line dropped")]
        return []

    def committed(self, token: int, ok: bool, now: float) -> list[Action]:
        self.committed_calls.append((token, ok))
        return [Send(ACK if ok else NAK)]

    def next_deadline(self) -> float | None:
        return None if self.started is None else self.started + 1.0

    def reset(self) -> list[Action]:
        self.resets += 1
        self.buffer.clear()
        self.started = None
        return [Note("reset")]


def message(raw: bytes, now: float, sequence: int) -> DeviceMessage:
    return DeviceMessage(
        source="dev",
        kind="measurements",
        identity=PatientIdentity(patient_id="PID-SECRET", patient_name="Doe^Secret"),
        received_at=now,
        raw=raw,
        sequence=sequence,
    )


class Sink:
    def __init__(self) -> None:
        self.answers: list[bool | Exception] = []
        self.got: list[DeviceMessage] = []

    def __call__(self, msg: DeviceMessage) -> bool:
        self.got.append(msg)
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.opener = FakeOpener()
        self.port = SerialPort(
            serial_config(), self.clock, logging.getLogger("t.port"), self.opener
        )
        self.engines: list[LineEngine] = []
        self.sink = Sink()
        self.reader = SerialReader(
            source="dev",
            port=self.port,
            engine_factory=self.new_engine,
            sink=self.sink,
            clock=self.clock,
            logger=logging.getLogger("t.reader"),
        )
        assert self.port.open()

    def new_engine(self) -> LineEngine:
        self.engines.append(LineEngine())
        return self.engines[-1]

    @property
    def engine(self) -> LineEngine:
        assert isinstance(self.reader.engine, LineEngine)
        return self.reader.engine

    def device_sends(self, data: bytes) -> None:
        self.opener.current.incoming += data
        while self.opener.current.incoming:
            self.reader.step()

    @property
    def written(self) -> bytes:
        return bytes(self.opener.current.written)


def test_message_is_acked_only_after_the_sink_took_it() -> None:
    rig = Rig()
    rig.sink.answers = [True]
    rig.device_sends(b"HR: 72\n")
    assert [m.raw for m in rig.sink.got] == [b"HR: 72"]
    assert rig.engine.committed_calls == [(1, True)]
    assert rig.written == ACK
    assert rig.reader.stats()["delivered"] == 1


@pytest.mark.parametrize("answer", [False, OSError(28, "No space left on device")])
def test_refused_or_failing_sink_makes_the_engine_refuse(answer: bool | Exception) -> None:
    rig = Rig()
    rig.sink.answers = [answer, True]
    rig.device_sends(b"one\n")
    rig.device_sends(b"one\n")  # the device sends it again
    assert rig.engine.committed_calls == [(1, False), (2, True)]
    assert rig.written == NAK + ACK
    assert rig.reader.stats()["refused"] == 1


def test_engine_exception_is_counted_logged_without_data_and_the_engine_reset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    caplog.set_level(logging.DEBUG)
    rig.device_sends(b"half X")
    rig.device_sends(b"good\n")
    stats = rig.reader.stats()
    assert stats["engine_error"] == 1
    assert rig.engine.resets == 1
    assert [m.raw for m in rig.sink.got] == [b"good"]
    assert "SECRET" not in caplog.text
    assert "Doe" not in caplog.text


def test_an_engine_that_cannot_even_reset_is_replaced() -> None:
    rig = Rig()

    def broken_reset() -> list[Action]:
        raise RuntimeError("reset bug")

    rig.engine.reset = broken_reset  # type: ignore[method-assign]
    rig.device_sends(b"X")
    assert len(rig.engines) == 2
    rig.device_sends(b"ok\n")
    assert [m.raw for m in rig.sink.got] == [b"ok"]


def test_notes_are_counted_and_logged_at_the_transition_not_the_repeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    caplog.set_level(logging.DEBUG, "t.reader")
    rig.device_sends(b"!!!!")
    rig.device_sends(b"a\n")
    rig.device_sends(b"!")
    assert rig.reader.stats()["noise"] == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # the first of each streak; the good message ends a streak
    recovered = [r for r in caplog.records if r.getMessage() == "good message after line events"]
    assert recovered[0].events == "noise=4"  # type: ignore[attr-defined]


def test_informational_notes_are_info_once_and_no_line_trouble(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    caplog.set_level(logging.DEBUG, "t.reader")
    rig.device_sends(b"?a\n?b\n")
    levels = [r.levelno for r in caplog.records if r.getMessage() == "serial line event"]
    assert levels == [logging.INFO, logging.DEBUG]
    assert not [r for r in caplog.records if r.getMessage() == "good message after line events"]


def test_reads_never_wait_past_the_engine_deadline_and_it_is_polled() -> None:
    rig = Rig()
    rig.device_sends(b"partial")
    rig.clock.advance(0.95)
    rig.reader.step()
    assert rig.opener.current.timeout == pytest.approx(0.05)
    rig.clock.advance(0.1)
    rig.reader.step()
    assert rig.reader.stats()["timeout"] == 1
    rig.reader.step()
    assert rig.opener.current.timeout == MAX_READ_WAIT


def test_reads_are_fed_in_bounded_chunks() -> None:
    rig = Rig()
    rig.device_sends(b"a" * (3 * READ_CHUNK))
    assert max(rig.engine.fed) <= READ_CHUNK


def test_lost_port_is_reopened_and_the_engine_reset() -> None:
    rig = Rig()
    rig.device_sends(b"half a mess")
    rig.opener.current.fail_read = serial.SerialException("device disconnected")
    rig.reader.step()
    assert not rig.port.is_open
    rig.opener.unplugged = True
    assert not rig.reader._open()
    rig.opener.unplugged = False
    assert rig.reader._open()
    assert rig.engine.resets == 1
    rig.device_sends(b"age\n")
    assert [m.raw for m in rig.sink.got] == [b"age"]  # nothing from before the loss
    stats = rig.reader.stats()
    assert (stats["port_lost"], stats["reopened"]) == (1, 1)


def test_run_serves_until_stopped_and_closes_the_port() -> None:
    rig = Rig()
    rig.opener.current.incoming += b"one\n"
    stop = threading.Event()
    thread = threading.Thread(target=rig.reader.run, args=(stop,))
    thread.start()
    for _ in range(200):
        if rig.sink.got:
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert [m.raw for m in rig.sink.got] == [b"one"]
    assert rig.opener.current.closed


def test_engine_time_is_monotonic_during_a_message_and_follows_wall_clock_when_idle() -> None:
    clock = FakeClock()
    times = EngineClock(clock)
    start = times.now(idle=True)
    clock._now -= 3600  # NTP steps the wall clock back mid-message
    clock._mono += 2
    assert times.now(idle=False) == start + 2
    assert times.now(idle=True) == start - 3600


# -- the real ASTM engine, the simulator on the other end of a socat pty pair ---------------------


def quick_astm_profile() -> DeviceProfile:
    """The built-in ASTM profile with timeouts short enough for a test."""
    profile = load_profile("astm-e1394")
    assert isinstance(profile.link, AstmProtocol)
    link = profile.link.model_copy(update={"frame_ack_timeout": 2.0, "receive_timeout": 3.0})
    simulator = profile.simulator.model_copy(update={"pause_seconds": 0.1})
    return profile.model_copy(update={"link": link, "simulator": simulator})


@pytest.mark.peers
@pytest.mark.parametrize("faults", ["", "bad-checksum:2@2,noise@1,flood:300@2"])
def test_astm_simulator_over_ptys_delivers_every_message_despite_faults(
    tmp_path: Path, faults: str
) -> None:
    require_tool("socat")
    profile = quick_astm_profile()
    played = play_over_ptys(tmp_path, profile, faults)
    report, reader = played.report, played.reader
    n = len(profile.simulator.messages)
    assert (report.delivered, report.abandoned) == (n, 0)
    assert [m.identity.patient_id for m in played.got] == ["PID-1001", "PID-1002", "PID-1003"][:n]
    stats = reader.stats()
    if faults:
        assert stats["bad_checksum"] >= 2 and stats["noise"] >= 1
