"""A SerialReader on one end of a socat pty pair, the device simulator on the other."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import serial

from gateway.clock import SystemClock
from gateway.config import SerialIngest
from gateway.ingest.serial.message import DeviceMessage
from gateway.ingest.serial.port import SerialPort
from gateway.ingest.serial.profile import DeviceProfile
from gateway.ingest.serial.profiles import make_engine
from gateway.ingest.serial.reader import SerialReader
from gateway.simulate.faults import parse_injections
from gateway.simulate.player import DeviceSimulator, PlayReport
from gateway.simulate.socat import PtyPair
from tests.harness import wait_until


@dataclass
class PtyPlay:
    """What one play left: the messages delivered, the reader (counters, monitor), the report."""

    got: list[DeviceMessage]
    reader: SerialReader
    report: PlayReport


def play_over_ptys(
    tmp_path: Path,
    profile: DeviceProfile,
    faults: str = "",
    *,
    expected: int = 0,
    retry_wait: float = 0.5,
) -> PtyPlay:
    """Play the profile's simulator messages into a reader; wait for ``expected`` messages."""
    got: list[DeviceMessage] = []

    def sink(message: DeviceMessage) -> bool:
        got.append(message)
        return True

    with PtyPair(tmp_path / "gw", tmp_path / "dev") as pair:
        cfg = SerialIngest(name="dev", port=str(pair.a), profile=profile.name)
        logger = logging.getLogger("t.serial")
        reader = SerialReader(
            source="dev",
            port=SerialPort(cfg, SystemClock(), logger),
            engine_factory=lambda: make_engine(profile, "dev", cfg.max_message_bytes),
            sink=sink,
            clock=SystemClock(),
            logger=logger,
        )
        stop = threading.Event()
        thread = threading.Thread(target=reader.run, args=(stop,))
        thread.start()
        try:
            # pyserial's open discards what is already buffered: speak only once it is open.
            assert wait_until(lambda: reader.port.is_open, 10), "the reader never opened its port"
            with serial.Serial(str(pair.b), timeout=0.1) as line:
                simulator = DeviceSimulator(
                    profile, line, injections=parse_injections(faults), retry_wait=retry_wait
                )
                report = simulator.run()
            # The last message may end only by silence: wait for it (bounded, not a timing check).
            wait_until(lambda: len(got) >= expected, 30)
        finally:
            stop.set()
            thread.join(10)
    return PtyPlay(got, reader, report)
