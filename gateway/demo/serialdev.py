"""The demo's serial device: a socat pty pair and the simulator playing the line-kv profile.

Skipped, with a note, when socat is not installed (Debian: apt install socat).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.simulate.socat import PtyPair

SERIAL_SECTION = """
[[ingest.serial]]
name = "vitals"
port = "{port}"
profile = "line-kv"
baudrate = 9600
reopen_max_seconds = 5
"""


class DemoSerialDevice:
    """A vital-signs monitor on a virtual cable: started before the gateway, played after."""

    def __init__(self, root: Path) -> None:
        self.gateway_end = root / "serial-gateway"
        self.device_end = root / "serial-device"
        self.pair = PtyPair(self.gateway_end, self.device_end, log=root / "socat.log")
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.played = 0

    @staticmethod
    def available() -> bool:
        """Whether socat is installed."""
        return shutil.which("socat") is not None

    def config_section(self) -> str:
        """The [[ingest.serial]] section for the demo config."""
        return SERIAL_SECTION.format(port=self.gateway_end)

    def start(self) -> None:
        """Make the pty pair (the gateway opens its end when it starts)."""
        self.pair.start()

    def play(self, gateway_listening: Callable[[], bool]) -> None:
        """Play the line-kv profile's messages in a thread, once the gateway has its end open.

        pyserial empties the input buffer when it opens a port, so bytes played earlier would
        be lost, as they would with a real device talking to a gateway still starting.
        """
        self.thread = threading.Thread(
            target=self._play, args=(gateway_listening,), name="demo-serial"
        )
        self.thread.start()

    def _play(self, gateway_listening: Callable[[], bool]) -> None:
        from gateway.ingest.serial.profiles import load_profile
        from gateway.simulate.player import DeviceSimulator, open_line

        profile = load_profile("line-kv")
        while not gateway_listening():
            if self.stopping.wait(0.1):
                return
        with open_line(str(self.device_end), 9600) as line:
            report = DeviceSimulator(profile, line).run(self.stopping)
        self.played = report.played

    def stop(self) -> None:
        """Stop the player and remove the cable."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(30)
        self.pair.stop()
