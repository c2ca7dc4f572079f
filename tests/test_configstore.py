"""Config under change control: validation with lines, versions, diffs, apply, trial, rollback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import configstore
from gateway.clock import FakeClock
from gateway.configstore import ConfigStore, marker_path, validate_text

GOOD = """\
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 11112
"""

NEW = GOOD.replace('ae_title = "EDGE_GW"', 'ae_title = "EDGE_NEW"')


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    path = tmp_path / "gateway.toml"
    path.write_text(GOOD, "utf-8")
    path.chmod(0o640)
    return ConfigStore(path, tmp_path / "state", FakeClock())


def test_validate_text_names_key_and_line(tmp_path: Path) -> None:
    bad = GOOD.replace("port = 11112", 'port = "11112"')
    problems = validate_text(bad, tmp_path / "gateway.toml")
    assert len(problems) == 1
    assert problems[0].startswith("destination[0].port (gateway.toml line 9)")


def test_validate_text_reports_toml_syntax_and_unknown_keys(tmp_path: Path) -> None:
    assert validate_text("[gateway\n")[0].startswith("TOML syntax error")
    problems = validate_text(GOOD + "colour = 1\n", tmp_path / "gateway.toml")
    assert problems == ["destination[0].colour (gateway.toml line 10): unknown key"]


def test_validate_text_checks_files_relative_to_the_config(tmp_path: Path) -> None:
    text = GOOD + '[destination.tls]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n'
    problems = validate_text(text, tmp_path / "gateway.toml")
    assert any("destination[0].tls.ca" in p and "file not found" in p for p in problems)
    assert validate_text(GOOD, tmp_path / "gateway.toml") == []


def test_apply_refuses_an_invalid_text_and_changes_nothing(store: ConfigStore) -> None:
    restarts: list[int] = []
    result = store.apply(
        "[gateway]\nport = 1\n", "web:alice", request_restart=lambda: restarts.append(1)
    )
    assert not result.ok
    assert result.problems
    assert store.current_text() == GOOD
    assert store.versions() == []
    assert restarts == []
    assert not marker_path(store.config_path).exists()


def test_apply_keeps_old_file_as_version_writes_new_marks_trial_and_restarts(
    store: ConfigStore,
) -> None:
    restarts: list[int] = []
    result = store.apply(NEW, "web:alice", "new AE title", lambda: restarts.append(1))
    assert result.ok and result.restarting
    assert restarts == [1]
    assert store.current_text() == NEW
    # Mode of the config file kept (it may be readable by the daemon's group only).
    assert stat.S_IMODE(store.config_path.stat().st_mode) == 0o640
    versions = store.versions()
    assert [v.version_id for v in versions] == ["0002", "0001"]
    assert (versions[0].actor, versions[0].comment) == ("web:alice", "new AE title")
    assert versions[1].actor == "file"
    assert store.read_version(versions[1]) == GOOD
    marker = json.loads(marker_path(store.config_path).read_text())
    assert marker == {"version": "0002", "previous": str(versions[1].path), "starts": 0}


def test_diff_between_versions_is_a_unified_diff(store: ConfigStore) -> None:
    store.apply(NEW, "web:alice", request_restart=lambda: None)
    diff = store.diff("0001", "0002")
    assert diff is not None
    assert '-ae_title = "EDGE_GW"' in diff
    assert '+ae_title = "EDGE_NEW"' in diff
    assert diff.startswith("--- 0001\n+++ 0002\n")
    assert store.diff("0002") == ""  # the file now is version 0002
    assert store.diff("9999") is None
    assert store.diff("../etc") is None


def test_a_trial_that_reaches_ready_is_confirmed(store: ConfigStore) -> None:
    store.apply(NEW, "web:alice", request_restart=lambda: None)
    state = configstore.on_start(store.config_path)
    assert state.in_trial and not state.rolled_back
    assert state.version_id == "0002" and state.previous_id == "0001"
    assert configstore.confirm(store.config_path)
    assert not marker_path(store.config_path).exists()
    # The next start is an ordinary one and keeps the new file.
    assert configstore.on_start(store.config_path) == configstore.TrialState(False, False)
    assert store.current_text() == NEW


def test_a_second_start_without_ready_restores_the_previous_version(store: ConfigStore) -> None:
    store.apply(NEW, "web:alice", request_restart=lambda: None)
    assert configstore.on_start(store.config_path).in_trial
    # ... the process dies before READY (crash, watchdog); systemd starts it again:
    state = configstore.on_start(store.config_path)
    assert state.rolled_back and not state.in_trial
    assert store.current_text() == GOOD
    assert not marker_path(store.config_path).exists()
    assert not configstore.confirm(store.config_path)


def test_a_start_failure_the_daemon_sees_rolls_back_at_once(store: ConfigStore) -> None:
    store.apply(NEW, "web:alice", request_restart=lambda: None)
    configstore.on_start(store.config_path)
    assert configstore.rollback(store.config_path, "service listener did not start")
    assert store.current_text() == GOOD
    assert not configstore.rollback(store.config_path, "again")  # no trial any more


def test_rollback_from_a_file_that_no_longer_parses(store: ConfigStore) -> None:
    store.apply(NEW, "web:alice", request_restart=lambda: None)
    store.config_path.write_text("[gateway\n")  # damaged after the apply
    configstore.on_start(store.config_path)
    assert configstore.rollback(store.config_path, "does not validate")
    assert validate_text(store.current_text(), store.config_path) == []


def test_a_damaged_marker_counts_as_a_failed_trial(store: ConfigStore) -> None:
    marker_path(store.config_path).write_text("{not json")
    state = configstore.on_start(store.config_path)
    assert not state.in_trial and not state.rolled_back
    assert not marker_path(store.config_path).exists()
    assert store.current_text() == GOOD  # nothing known to restore: the file stays


def test_apply_without_a_daemon_leaves_no_marker(store: ConfigStore) -> None:
    result = store.apply(NEW, "cli:root")
    assert result.ok and not result.restarting
    assert not marker_path(store.config_path).exists()


def test_the_unchanged_file_is_not_saved_twice(store: ConfigStore) -> None:
    store.apply(NEW, "web:alice", request_restart=lambda: None)
    configstore.confirm(store.config_path)
    store.apply(GOOD, "web:bob", request_restart=lambda: None)
    assert [v.actor for v in store.versions()] == ["web:bob", "web:alice", "file"]


def test_restore_applies_a_saved_version_with_a_trial(store: ConfigStore) -> None:
    store.apply(NEW, "web:alice", request_restart=lambda: None)
    configstore.confirm(store.config_path)
    result = store.restore("0001", "web:alice", request_restart=lambda: None)
    assert result.ok and result.restarting
    assert store.current_text() == GOOD
    assert store.versions()[0].comment == "restore of version 0001"
    assert not store.restore("0099", "web:alice").ok


def test_history_is_pruned_to_the_newest_versions(
    store: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(configstore, "MAX_VERSIONS", 3)
    for n in range(5):
        store.save_version(f"# {n}\n", "web:alice")
    assert [v.version_id for v in store.versions()] == ["0005", "0004", "0003"]


def test_exec_same_command_keeps_the_pid_and_the_command_line(tmp_path: Path) -> None:
    script = tmp_path / "again.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            from gateway.configstore import exec_same_command
            print(os.getpid(), sys.argv[1:], flush=True)
            if not os.environ.get("AGAIN"):
                os.environ["AGAIN"] = "1"
                exec_same_command()
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, str(script), "run", "--config", "x.toml"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert len(out) == 2
    assert out[0] == out[1]
    assert out[0].endswith("['run', '--config', 'x.toml']")


# -- writing TOML back (form edits) --------------------------------------------------------------


FULL = """\
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"
study_window_minutes = 12.5

[modality]
modality = "US"
manufacturer = "Acme \\"Sono\\" \\\\ Co"

[[ingest.folder]]
name = "export"
path = "drop"
filename_pattern = '^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_'

[[ingest.folder]]
name = "second"
path = "drop2"

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 11112
[destination.tls]
ca = "tls/ca.pem"
cert = "tls/gw.pem"
key = "tls/gw.key"
verify_hostname = false

[[destination]]
name = "backup"
ae_title = "BACKUP"
host = "::1"
port = 104

[dicom_listener]
allowed_calling_ae_titles = ["US1", "US 2"]
"""


def test_dumps_round_trips_every_shape_the_config_uses() -> None:
    import tomllib

    from gateway.configtoml import dumps

    data = tomllib.loads(FULL)
    text = dumps(data)
    assert tomllib.loads(text) == data
    assert "[[destination]]" in text and "[destination.tls]" in text
    assert '"weird key" = "\\u007f\\n"' in dumps({"weird key": "\x7f\n"})
    assert tomllib.loads(dumps({"weird key": "\x7f\n"})) == {"weird key": "\x7f\n"}
