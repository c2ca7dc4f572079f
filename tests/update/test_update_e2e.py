"""End to end: a box running release N from `current` takes N+1 from a TUF repo on 127.0.0.1.

The gateway daemon runs from the release folder (the fake release's bin/dicom-gateway execs this
tree's `python -m gateway`), objects flow from its drop folder to storescp before, during and
after the update, and none is lost. Until the daemon writes the READY marker itself (the hook
asked for in the report), the test's stand-in for systemd writes it when READY=1 arrives.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.update import symlink
from gateway.update.audit import UpdateAudit
from gateway.update.client import BoxState, UpdateClient, UpdateSettings
from gateway.update.installer import Installer, unpack
from gateway.update.repo import target_name
from gateway.update.selftest import selftest_probe
from gateway.update.status import ReadyMarker, mark_ready, read_floor
from tests.harness import wait_until, write_config
from tests.peers import StoreSCP, free_port
from tests.test_daemon import drop, jpeg_bytes
from tests.update.repofactory import HOST_ARCH, FakeRelease, build_repo, serve_repo

pytestmark = pytest.mark.peers


class ReleaseRunner:
    """Runs `current/bin/dicom-gateway run` as systemd would; restart() stands in for systemctl."""

    def __init__(self, current: Path, config: Path, state: Path) -> None:
        self.current = current
        self.config = config
        self.state = state
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_from: list[str] = []
        self.log_path = config.parent / "gateway.log"

    def start(self) -> None:
        release = symlink.current_release(self.current)
        assert release is not None
        sock_path = self.config.parent / f"notify-{free_port()}.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(sock_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.current / "bin" / "dicom-gateway"), "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.started_from.append(release)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log_path.read_text()
                notify.settimeout(0.2)
                try:
                    message = notify.recv(65536).decode()
                except TimeoutError:
                    continue
                if message.startswith("READY=1"):
                    mark_ready(self.state, ReadyMarker(self.proc.pid, time.time(), release))
                    return
            raise TimeoutError(self.log_path.read_text())
        finally:
            notify.close()
            sock_path.unlink()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def test_update_n_to_n_plus_1_with_the_gateway_running_loses_nothing(tmp_path: Path) -> None:
    fx = build_repo(tmp_path / "vendor", [FakeRelease("1.0.0"), FakeRelease("1.1.0")])
    releases, current = tmp_path / "opt" / "releases", tmp_path / "opt" / "current"
    unpack(fx.bundles[target_name("1.0.0", HOST_ARCH)], releases, "1.0.0")
    symlink.switch(current, releases / "1.0.0")
    pacs = StoreSCP(tmp_path / "pacs").start()
    config = write_config(tmp_path / "box", pacs.port)
    state = tmp_path / "box" / "state"
    drop_dir = tmp_path / "box" / "drop"
    runner = ReleaseRunner(current, config, state)
    clock = SystemClock()
    try:
        runner.start()
        for seed in range(3):
            drop(drop_dir, f"P{seed}_DOE^JANE_{seed}.jpg", jpeg_bytes(seed))
        with serve_repo(fx.path) as server:
            client = UpdateClient(
                UpdateSettings(server.base_url, arch=HOST_ARCH),
                state,
                fx.root_bytes,
                BoxState("1.0.0", read_floor(state), frozenset(), "box-1"),
                UpdateAudit(state, clock, "test"),
            )
            offer = client.check()
            assert offer is not None and offer.version == "1.1.0"
            bundle = client.download(offer).path

        def restart() -> None:
            # Objects arrive while the new release is coming up, too.
            for seed in range(3, 6):
                drop(drop_dir, f"P{seed}_DOE^JANE_{seed}.jpg", jpeg_bytes(seed))
            runner.restart()

        installer = Installer(
            releases,
            current,
            state,
            clock,
            logging.getLogger("test.e2e"),
            restart,
            probe=selftest_probe(config, state, clock),
            trial_seconds=60.0,
            poll_seconds=0.5,
        )
        outcome = installer.install(bundle, offer)
        for seed in range(6, 9):
            drop(drop_dir, f"P{seed}_DOE^JANE_{seed}.jpg", jpeg_bytes(seed))

        assert outcome.result == "committed", (outcome, runner.log_path.read_text()[-3000:])
        assert symlink.current_release(current) == "1.1.0"
        assert runner.started_from == ["1.0.0", "1.1.0"]
        assert read_floor(state) == "1.1.0"
        assert wait_until(lambda: len(pacs.received()) >= 9, 60), runner.log_path.read_text()
        time.sleep(1.0)  # a duplicate would show up after the ninth
        assert len(pacs.received()) == 9
    finally:
        runner.stop()
        pacs.stop()
