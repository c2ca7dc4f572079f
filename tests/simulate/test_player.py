"""The simulator on a line: raw protocols byte for byte, faults where asked, the CLI entry."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import serial

from gateway.cli_simulate import main
from gateway.ingest.serial.profiles import load_profile
from gateway.simulate.faults import parse_injections
from gateway.simulate.player import DeviceSimulator, emulates_rate
from gateway.simulate.socat import PtyPair
from tests.harness import wait_until
from tests.peers import require_tool

REPO = Path(__file__).resolve().parents[2]


class FakeLine:
    """Records what is written and at which baud rate."""

    def __init__(self) -> None:
        self.timeout: float | None = 0.1
        self.baudrate = 9600
        self.writes: list[tuple[int, bytes]] = []

    @property
    def in_waiting(self) -> int:
        return 0

    def read(self, size: int = 1) -> bytes:
        return b""

    def write(self, data: bytes, /) -> int:
        self.writes.append((self.baudrate, data))
        return len(data)

    def flush(self) -> None:
        pass


def quick_linekv():  # type: ignore[no-untyped-def]
    profile = load_profile("line-kv")
    return profile.model_copy(
        update={"simulator": profile.simulator.model_copy(update={"pause_seconds": 0.0})}
    )


def test_raw_messages_are_written_as_the_profile_gives_them() -> None:
    profile = quick_linekv()
    line = FakeLine()
    report = DeviceSimulator(profile, line, count=4).run()
    sent = b"".join(data for _rate, data in line.writes)
    first = profile.simulator.messages[0].encode("latin-1")
    assert sent.startswith(first) and sent.count(b"END OF REPORT") == 4
    assert report.played == 4


def test_wrong_baud_on_a_real_uart_switches_the_rate_for_that_message_only() -> None:
    profile = quick_linekv()
    line = FakeLine()
    DeviceSimulator(
        profile, line, count=2, injections=parse_injections("wrong-baud@2"), emulate_rate=False
    ).run()
    rates = [rate for rate, _data in line.writes]
    assert rates == [9600, 4800]


def test_silence_splits_the_message_and_noise_comes_before_it() -> None:
    profile = quick_linekv()
    line = FakeLine()
    DeviceSimulator(profile, line, count=1, injections=parse_injections("noise:8,silence:0")).run()
    assert len(line.writes[0][1]) == 8
    assert len(line.writes) == 3  # noise, first half, second half


def test_bad_checksum_is_refused_for_a_protocol_without_checksums() -> None:
    with pytest.raises(ValueError, match="astm-e1394"):
        DeviceSimulator(
            quick_linekv(), FakeLine(), injections=parse_injections("bad-checksum")
        ).run()


def test_a_pty_has_no_rate_so_wrong_baud_is_emulated(tmp_path: Path) -> None:
    require_tool("socat")
    with PtyPair(tmp_path / "a", tmp_path / "b") as pair:
        assert emulates_rate(str(pair.a))
    assert emulates_rate("socket://127.0.0.1:7000")
    assert not emulates_rate("/dev/ttyS0")


@pytest.mark.peers
def test_cli_and_hardware_script_play_onto_a_pty(tmp_path: Path) -> None:
    require_tool("socat")
    with (
        PtyPair(tmp_path / "gw", tmp_path / "dev") as pair,
        serial.Serial(str(pair.a), timeout=0.2) as gateway_end,
    ):
        got = bytearray()
        done = threading.Event()

        def collect() -> None:
            while not done.is_set():
                got.extend(gateway_end.read(4096))

        reader = threading.Thread(target=collect)
        reader.start()
        try:
            assert main(["--profile", "line-kv", "--port", str(pair.b), "--count", "1"]) == 0
            script = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "hardware" / "simulate.py"),
                    "--profile",
                    "line-kv",
                    "--port",
                    str(pair.b),
                    "--count",
                    "1",
                    "--quiet",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert script.returncode == 0, script.stderr
            assert "1 played" in script.stdout
            # The script has exited; its last bytes may still be on their way through socat.
            assert wait_until(lambda: bytes(got).count(b"END OF REPORT") == 2, 10), bytes(got)
        finally:
            done.set()
            reader.join(5)
    assert bytes(got).count(b"END OF REPORT") == 2


def test_cli_refuses_a_bad_fault_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "line-kv", "--port", "/dev/null", "--inject", "gremlins"]) == 2
    assert "unknown fault" in capsys.readouterr().err
