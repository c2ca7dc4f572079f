"""Runs the real `dicom-gateway run` in a subprocess, as systemd would, for whole-flow tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

CONFIG = """\
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"
institution_name = "Test Hospital"
station_name = "TEST-ROOM"
{gateway_extra}

[web]
enabled = false

[modality]
modality = "US"
manufacturer = "Acme"
model_name = "Sono 3000"

[[ingest.folder]]
name = "export"
path = "drop"
filename_pattern = '^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_'
settle_seconds = {settle}
poll_seconds = 0.5
empty_grace_seconds = 2

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = {port}
idle_release_seconds = 1
connect_timeout = 3
acse_timeout = 5
dimse_timeout = 30
network_timeout = 30
[destination.retry]
initial_seconds = 0.2
max_seconds = 1.0
{tls}
"""

TLS = """\
[destination.tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
verify_hostname = true
"""


def write_config(
    root: Path,
    port: int,
    *,
    tls: tuple[Path, Path, Path] | None = None,
    settle: float = 0.3,
    gateway_extra: str = "",
) -> Path:
    """A config for a gateway in ``root`` sending to 127.0.0.1:port; returns its path."""
    (root / "drop").mkdir(parents=True, exist_ok=True)
    tls_text = TLS.format(ca=tls[0], cert=tls[1], key=tls[2]) if tls else ""
    path = root / "gateway.toml"
    path.write_text(
        CONFIG.format(port=port, tls=tls_text, settle=settle, gateway_extra=gateway_extra), "utf-8"
    )
    return path


class GatewayProcess:
    """`python -m gateway run --config ...` with a NOTIFY_SOCKET we listen on."""

    def __init__(
        self, config: Path, env: dict[str, str] | None = None, umask: int | None = None
    ) -> None:
        self.config = config
        # Added to the daemon's environment (WATCHDOG_USEC, PYTHONPATH, ...).
        self.env = dict(env or {})
        # The umask the daemon is started with (None: this process's), as a shell would pass it.
        self.umask = umask
        self.root = config.parent
        self.log_path = self.root / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: socket.socket | None = None
        self.messages: list[str] = []

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> GatewayProcess:
        """Start; by default wait for READY=1."""
        # Imported here: tests.peers imports this module (stop_process).
        from tests.peers import free_port

        sock_path = self.root / f"notify-{free_port()}.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(sock_path))
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(sock_path),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            umask=-1 if self.umask is None else self.umask,
        )
        log.close()
        if wait_ready:
            self.wait_for_message("READY=1", timeout)
        return self

    def wait_for_message(self, prefix: str, timeout: float = 30.0, contains: str = "") -> str:
        """Block until a notify message starting with ``prefix`` (and holding ``contains``)
        arrives."""
        assert self.notify is not None
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if message.startswith(prefix) and contains in message:
                return message
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited ({self.proc.returncode}):\n{self.log()}")
            self.notify.settimeout(0.2)
            try:
                message = self.notify.recv(65536).decode()
            except TimeoutError:
                continue
            self.messages.append(message)
            if message.startswith(prefix) and contains in message:
                return message
        raise TimeoutError(f"no {prefix} within {timeout}s:\n{self.log()}")

    def wait_for_status(self, containing: str, timeout: float = 30.0) -> str:
        """Block until a STATUS= line (alone or after READY=1) containing ``containing`` arrives;
        returns that line."""
        assert self.notify is not None
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for message in self.messages[checked:]:
                for line in message.splitlines():
                    if line.startswith("STATUS=") and containing in line:
                        return line
            checked = len(self.messages)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no STATUS= with {containing!r} within {timeout}s")
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited ({self.proc.returncode}):\n{self.log()}")
            self.notify.settimeout(0.2)
            try:
                self.messages.append(self.notify.recv(65536).decode())
            except TimeoutError:
                continue

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code.

        30 s, under the unit's TimeoutStopSec=45s: on a loaded CI machine a clean stop took more
        than 10 s. Should it time out all the same, the process is killed and the notify socket
        closed (``stop``), so that the failure is reported here and not later as another test's
        unclosed-socket warning or a still-busy mount.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
            self._drain()
        finally:
            self.stop()
        return code

    def _drain(self) -> None:
        """Keep the notify messages still queued in the socket after the process ended."""
        if self.notify is None:
            return
        self.notify.setblocking(False)
        while True:
            try:
                self.messages.append(self.notify.recv(65536).decode())
            except BlockingIOError:
                return

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def stop(self) -> None:
        """Make sure it is gone (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace") if self.log_path.exists() else ""


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """Stop a peer we started and reap it: SIGTERM, ``grace`` seconds to exit, then SIGKILL.

    Harmless when ``proc`` is None or has already exited.
    """
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(
    condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05
) -> bool:
    """Poll ``condition()`` until it is true or the timeout passes; the result (never a timed
    assertion: the timeout only bounds a test that would otherwise hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
