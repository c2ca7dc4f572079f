"""A configuration applied from the panel is on trial: a gateway that cannot start with it puts
the previous file back and starts again with it, under the same PID, reporting READY=1 again."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.configstore import ConfigStore, marker_path
from tests.harness import GatewayProcess, write_config
from tests.peers import StoreSCP

pytestmark = pytest.mark.peers


def test_a_configuration_whose_listener_cannot_start_is_rolled_back_in_the_same_process(
    tmp_path: Path,
) -> None:
    pacs = StoreSCP(tmp_path / "pacs")
    config = write_config(tmp_path / "gw", pacs.port)
    good = config.read_text()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy_port = blocker.getsockname()[1]
    bad = good + f'\n[dicom_listener]\nbind = "127.0.0.1"\nport = {busy_port}\n'
    store = ConfigStore(config, tmp_path / "gw" / "state", SystemClock())
    result = store.apply(bad, "test", "listener on a taken port", request_restart=lambda: None)
    assert result.ok and marker_path(config).exists()

    gateway = GatewayProcess(config)
    try:
        pacs.start()
        gateway.start()  # READY=1 comes from the restarted process, on the old file
        assert gateway.proc is not None and gateway.proc.poll() is None
        assert config.read_text() == good
        assert not marker_path(config).exists()
        log = gateway.log()
        assert "gateway failed to start" in log
        assert "configuration rolled back" in log or "rolled back" in log
    finally:
        gateway.stop()
        pacs.stop()
        blocker.close()
