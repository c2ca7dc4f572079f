"""The trial self-test: each check against real files, a real queue and real DICOM peers."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.config import load_config
from gateway.spool.store import Spool
from gateway.update.installer import TrialContext
from gateway.update.selftest import (
    CheckResult,
    check_config,
    check_destinations,
    check_listener,
    check_queue,
    check_ready,
    real_echo,
    run_selftest,
    selftest_probe,
    verdict,
)
from gateway.update.status import ReadyMarker, mark_ready
from tests.harness import write_config
from tests.peers import StoreSCP, free_port
from tests.spool.objects import stage


def _config(tmp_path: Path, pacs_port: int, listener_port: int | None = None) -> Path:
    path = write_config(tmp_path, pacs_port)
    if listener_port is not None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f'\n[dicom_listener]\nport = {listener_port}\nbind = "127.0.0.1"\n')
    return path


def test_ready_needs_a_marker_written_since_the_restart(tmp_path: Path) -> None:
    assert check_ready(tmp_path, 100.0)[0] is False
    mark_ready(tmp_path, ReadyMarker(pid=42, at=90.0, version="1.1.0"))
    ok, reason = check_ready(tmp_path, 100.0)
    assert not ok and "since the restart" in reason
    mark_ready(tmp_path, ReadyMarker(pid=43, at=101.0, version="1.1.0"))
    assert check_ready(tmp_path, 100.0) == (True, "READY (pid 43, version 1.1.0)")


def test_config_that_does_not_load_fails_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\nno_such_key = 1\n", "utf-8")

    (ok, reason), config = check_config(path, None)

    assert not ok and config is None
    assert "no_such_key" in reason


def test_queue_opens_and_migrates_in_a_fresh_state_dir(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, free_port()))

    assert check_queue(config, FakeClock()) == (True, "queue opens")
    assert (config.gateway.state_dir / "spool" / "queue.sqlite").is_file()


def test_queue_that_cannot_open_fails(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, free_port()))
    spool_dir = config.gateway.state_dir / "spool"
    spool_dir.mkdir(parents=True)
    (spool_dir / "queue.sqlite").write_bytes(b"this is not a database" * 100)

    ok, reason = check_queue(config, FakeClock())

    assert not ok and "queue does not open" in reason


def test_listener_check_passes_without_a_listener(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, free_port()))
    assert check_listener(config, real_echo(None)) == (True, "no DICOM listener configured")


def test_listener_check_echoes_the_configured_port(tmp_path: Path) -> None:
    peer = StoreSCP(tmp_path / "rx", ae_title="EDGE_GW").start()
    try:
        config = load_config(_config(tmp_path, free_port(), listener_port=peer.port))
        ok, reason = check_listener(config, real_echo(None))
    finally:
        peer.stop()
    assert ok, reason
    assert "C-ECHO succeeded" in reason


def test_listener_check_fails_when_nothing_answers(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, free_port(), listener_port=free_port()))
    ok, reason = check_listener(config, real_echo(None))
    assert not ok and reason.startswith("listener C-ECHO")


def test_reachable_pacs_passes(tmp_path: Path) -> None:
    peer = StoreSCP(tmp_path / "rx").start()
    try:
        config = load_config(_config(tmp_path, peer.port))
        ok, reason = check_destinations(config, FakeClock(), 0.0, real_echo(None))
    finally:
        peer.stop()
    assert ok, reason


def test_unreachable_pacs_with_an_empty_queue_passes(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, free_port()))
    ok, reason = check_destinations(config, FakeClock(), 0.0, real_echo(None))
    assert ok, reason


def test_unreachable_pacs_with_objects_waiting_fails_with_the_count(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, free_port()))
    clock = FakeClock()
    spool = Spool(config.gateway.state_dir, ["pacs"], 10**9, clock)
    spool.open()
    spool.enqueue(stage(spool), "export")
    spool.close()

    ok, reason = check_destinations(config, clock, 0.0, real_echo(None))

    assert not ok
    assert "pacs:" in reason and "1 waiting" in reason


def test_verdict_is_final_on_config_or_queue_and_open_otherwise() -> None:
    good = CheckResult("config", True, "config loads")
    assert verdict((good, CheckResult("ready", True, "READY"))).passed is True
    assert verdict((good, CheckResult("ready", False, "not yet"))).passed is None
    failed = verdict((CheckResult("queue", False, "queue does not open: x"),))
    assert failed.passed is False and "queue does not open" in failed.reason


@pytest.mark.parametrize("ready", [False, True])
def test_whole_selftest_against_a_real_pacs(tmp_path: Path, ready: bool) -> None:
    clock = FakeClock()
    peer = StoreSCP(tmp_path / "rx").start()
    try:
        path = _config(tmp_path, peer.port)
        state = load_config(path).gateway.state_dir
        if ready:
            mark_ready(state, ReadyMarker(pid=1, at=clock.now(), version="1.1.0"))
        probe = selftest_probe(path, state, clock)
        answer = probe(TrialContext("1.1.0", "1.0.0", clock.now(), clock.now() + 60))
        names = [r.name for r in run_selftest(path, state, clock.now(), clock)]
    finally:
        peer.stop()
    assert names == ["ready", "config", "queue", "listener", "destinations"]
    if ready:
        assert answer.passed is True, answer.reason
    else:
        assert answer.passed is None and "READY" in answer.reason
