"""`dicom-gateway procedure select|clear|show` against a real worklist cache file."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pytest

from gateway.cli_procedure import operator_name, register
from gateway.clock import SystemClock
from gateway.worklist.cache import WorklistCache
from gateway.worklist.selection import RoomSelection, selection_path
from tests.worklist.factory import make_item

CONFIG = """\
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"

[modality]
modality = "US"
manufacturer = "Acme"

[[ingest.folder]]
name = "export"
path = "drop"

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "127.0.0.1"
port = 11112
{worklist}
"""

WORKLIST = """
[worklist]
ae_title = "RIS"
host = "127.0.0.1"
port = 104
selection_expires_minutes = 60
"""

# Scheduled today, so the cache's expiry rule keeps them whatever day the test runs.
TODAY = datetime.date.today().strftime("%Y%m%d")
JANE = make_item(
    patient_id="P-JANE", patient_name="Doe^Jane", accession_number="ACC1", start_date=TODAY
)
STEP_A = make_item(
    accession_number="ACC2", step_id="SA", study_instance_uid="1.2.3.2", start_date=TODAY
)
STEP_B = make_item(
    accession_number="ACC2", step_id="SB", study_instance_uid="1.2.3.2", start_date=TODAY
)


def setup(tmp_path: Path, *, worklist: bool = True, cache: bool = True) -> Path:
    (tmp_path / "drop").mkdir()
    (tmp_path / "state").mkdir()
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(worklist=WORKLIST if worklist else ""), "utf-8")
    if cache:
        store = WorklistCache(tmp_path / "state" / "worklist.sqlite", SystemClock())
        store.open()
        store.replace([JANE, STEP_A, STEP_B], SystemClock().now())
        store.close()
    return config


def run(config: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dicom-gateway")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["procedure", *argv, "--config", str(config)])
    return int(args.func(args))


def current_key(tmp_path: Path) -> str | None:
    chosen = RoomSelection(selection_path(tmp_path / "state"), SystemClock(), 60).current()
    return None if chosen is None else chosen.item_key


def test_select_by_accession_records_the_step_and_the_operator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    config = setup(tmp_path)
    assert run(config, "select", "ACC1") == 0
    out = capsys.readouterr().out
    assert "Doe^Jane" in out  # the operator checks the patient on the screen
    assert JANE.key in out
    assert current_key(tmp_path) == JANE.key
    chosen = RoomSelection(selection_path(tmp_path / "state"), SystemClock()).current()
    assert chosen is not None
    assert chosen.by == "cli:alice"


def test_select_refuses_an_unknown_accession(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup(tmp_path)
    assert run(config, "select", "NOPE") == 1
    assert "no scheduled step with accession number NOPE" in capsys.readouterr().err
    assert current_key(tmp_path) is None


def test_select_refuses_an_order_with_two_steps_unless_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup(tmp_path)
    assert run(config, "select", "ACC2") == 1
    assert "2 scheduled steps have accession number ACC2" in capsys.readouterr().err
    assert current_key(tmp_path) is None
    assert run(config, "select", "ACC2", "--step", "SB") == 0
    assert current_key(tmp_path) == STEP_B.key


def test_clear_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup(tmp_path)
    assert run(config, "show") == 0
    assert "no procedure selected" in capsys.readouterr().out
    run(config, "select", "ACC1")
    capsys.readouterr()
    assert run(config, "show") == 0
    assert "accession:   ACC1" in capsys.readouterr().out
    assert run(config, "clear") == 0
    assert current_key(tmp_path) is None
    run(config, "show")
    assert "no procedure selected" in capsys.readouterr().out


def test_select_without_a_worklist_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup(tmp_path, worklist=False, cache=False)
    assert run(config, "select", "ACC1") == 1
    assert "no [worklist]" in capsys.readouterr().err


def test_select_before_any_worklist_was_fetched_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup(tmp_path, cache=False)
    assert run(config, "select", "ACC1") == 1
    assert "no worklist cache" in capsys.readouterr().err


def test_operator_name_prefers_the_sudo_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUDO_USER", "bob")
    assert operator_name() == "cli:bob"
    monkeypatch.delenv("SUDO_USER")
    assert operator_name().startswith("cli:")
