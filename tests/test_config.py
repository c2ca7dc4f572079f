"""The config file: strict keys, errors that name key, file and line, paths relative to the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, ListenerTlsSettings, load_config

EXAMPLE = """\
[gateway]
ae_title = "EDGE_GW"
state_dir = "state"
uid_root = "1.2.826.0.1.3680043.10.1"
institution_name = "General Hospital"
station_name = "US-ROOM-3"

[modality]
modality = "US"
manufacturer = "Acme"
model_name = "Sono 3000"

[[ingest.folder]]
name = "export"
path = "drop"
filename_pattern = '^(?P<patient_id>[^_]+)_(?P<patient_name>[^_]+)_'
settle_seconds = 1.0

[[destination]]
name = "pacs"
ae_title = "PACS"
host = "pacs.example.org"
port = 2762
[destination.tls]
ca = "tls/pacs-ca.pem"
cert = "tls/gateway.pem"
key = "tls/gateway.key"
verify_hostname = true
"""


def write(tmp_path: Path, text: str, tls_files: bool = True) -> Path:
    if tls_files:
        (tmp_path / "tls").mkdir(exist_ok=True)
        for name in ("pacs-ca.pem", "gateway.pem", "gateway.key"):
            (tmp_path / "tls" / name).write_text("x")
    path = tmp_path / "gateway.toml"
    path.write_text(text, "utf-8")
    return path


def problems(path: Path, credentials_dir: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, credentials_dir)
    return info.value.problems


def test_issue_example_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE))
    assert config.gateway.state_dir == tmp_path / "state"
    assert config.ingest.folder[0].path == tmp_path / "drop"
    assert config.destination[0].tls is not None
    assert config.destination[0].tls.ca == tmp_path / "tls" / "pacs-ca.pem"
    assert config.destination[0].port == 2762
    assert config.gateway.uid_root == "1.2.826.0.1.3680043.10.1"


def test_unknown_key_is_named_with_its_line(tmp_path: Path) -> None:
    text = EXAMPLE.replace('station_name = "US-ROOM-3"', 'station_name = "US-ROOM-3"\ncolour = 1')
    assert problems(write(tmp_path, text)) == ["gateway.colour (gateway.toml line 7): unknown key"]


def test_wrong_type_in_second_destination_points_at_its_line(tmp_path: Path) -> None:
    text = EXAMPLE + '\n[[destination]]\nname = "b"\nae_title = "B"\nhost = "h"\nport = "104"\n'
    found = problems(write(tmp_path, text))
    assert len(found) == 1
    assert found[0].startswith("destination[1].port (gateway.toml line 34): ")


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    (tmp_path / "tls" / "pacs-ca.pem").unlink()
    found = problems(path)
    assert found == [
        f"destination[0].tls.ca (gateway.toml line 25): file not found: {tmp_path}/tls/pacs-ca.pem"
    ]


def test_key_may_come_from_systemd_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    (tmp_path / "tls" / "gateway.key").unlink()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gateway.key").write_text("x")
    assert load_config(path, str(creds)).destination[0].name == "pacs"
    assert "destination[0].tls.key" in problems(path, None)[0]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('ae_title = "EDGE_GW"', 'ae_title = "AN_AE_TITLE_TOO_LONG"', "gateway.ae_title"),
        ('uid_root = "1.2.826.0.1.3680043.10.1"', 'uid_root = "1.02.3"', "gateway.uid_root"),
        ("port = 2762", "port = 0", "destination[0].port"),
        ("settle_seconds = 1.0", "settle_seconds = -1", "ingest.folder[0].settle_seconds"),
        ("(?P<patient_name>", "(?P<name>", "ingest.folder[0].filename_pattern"),
        ('host = "pacs.example.org"', "", "destination[0].host"),
    ],
)
def test_bad_values_are_refused_by_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in EXAMPLE
    found = problems(write(tmp_path, EXAMPLE.replace(old, new)))
    assert any(p.startswith(expected + " (gateway.toml") for p in found), found


def test_duplicate_destination_names_are_refused(tmp_path: Path) -> None:
    text = EXAMPLE + '\n[[destination]]\nname = "pacs"\nae_title = "B"\nhost = "h"\nport = 104\n'
    assert any("used twice" in p for p in problems(write(tmp_path, text)))


def test_drop_folder_inside_state_dir_is_refused(tmp_path: Path) -> None:
    text = EXAMPLE.replace('path = "drop"', 'path = "state/drop"')
    assert any("overlaps state_dir" in p for p in problems(write(tmp_path, text)))


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "[gateway\nae_title = 1\n"))
    assert found[0].startswith(f"{tmp_path}/gateway.toml: TOML syntax error")


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.toml") == [f"{tmp_path}/nope.toml: config file not found"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_prints_summary_and_exits_zero(tmp_path: Path) -> None:
    proc = run_cli("check-config", "--config", str(write(tmp_path, EXAMPLE)))
    assert proc.returncode == 0, proc.stderr
    assert "destination pacs: PACS@pacs.example.org:2762 (TLS)" in proc.stdout


def test_check_config_prints_problems_and_exits_nonzero(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("port = 2762", "port = 70000"))
    proc = run_cli("check-config", "--config", str(path))
    assert proc.returncode == 2
    assert "config error: destination[0].port (gateway.toml line 23)" in proc.stderr


WORKLIST_PART = """
[dicom_listener]
port = 11112
bind = "0.0.0.0"
allowed_calling_ae_titles = ["US_ROOM_3"]
[dicom_listener.tls]
ca = "tls/pacs-ca.pem"
cert = "tls/gateway.pem"
key = "tls/gateway.key"

[worklist]
ae_title = "RIS"
host = "ris.example.org"
port = 104
refresh_seconds = 120
modality = "US"
scheduled_station_ae_title = "EDGE_GW"
character_set = "ISO_IR 100"
"""


def test_issue_3_listener_and_worklist_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE + WORKLIST_PART))
    assert config.dicom_listener is not None and config.worklist is not None
    assert config.dicom_listener.allowed_calling_ae_titles == ["US_ROOM_3"]
    assert config.dicom_listener.tls is not None
    assert config.dicom_listener.tls.ca == tmp_path / "tls" / "pacs-ca.pem"
    assert config.worklist.port == 104
    assert config.worklist.character_set == "ISO_IR 100"
    assert config.worklist.tls is None


def line_of(text: str, fragment: str) -> int:
    return text[: text.index(fragment)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('character_set = "ISO_IR 100"', 'character_set = "LATIN1"', "worklist.character_set"),
        ('["US_ROOM_3"]', '["A\\\\B"]', "dicom_listener.allowed_calling_ae_titles"),
        ("refresh_seconds = 120", "refresh_seconds = 1", "worklist.refresh_seconds"),
    ],
)
def test_bad_worklist_and_listener_values_name_key_and_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = (EXAMPLE + WORKLIST_PART).replace(old, new)
    found = problems(write(tmp_path, text))
    assert found[0].startswith(f"{expected} (gateway.toml line {line_of(text, new)}): "), found


def test_missing_listener_tls_file_is_named(tmp_path: Path) -> None:
    text = EXAMPLE + WORKLIST_PART.replace('ca = "tls/pacs-ca.pem"', 'ca = "no/ca.pem"')
    found = problems(write(tmp_path, text))
    line = line_of(text, 'ca = "no/ca.pem"')
    assert found == [
        f"dicom_listener.tls.ca (gateway.toml line {line}): file not found: {tmp_path}/no/ca.pem"
    ]


def test_the_listener_tls_verify_hostname_still_loads_and_is_documented_as_ignored(
    tmp_path: Path,
) -> None:
    # Issue 11 item 16: the reference listed verify_hostname for the listener as "Check the
    # peer's certificate names the host", which the listener never did (tlsctx.server_context).
    text = EXAMPLE + WORKLIST_PART.replace(
        'key = "tls/gateway.key"\n', 'key = "tls/gateway.key"\nverify_hostname = false\n', 1
    )
    config = load_config(write(tmp_path, text))
    assert config.dicom_listener is not None and config.dicom_listener.tls is not None
    assert isinstance(config.dicom_listener.tls, ListenerTlsSettings)
    reference = (Path(__file__).parent.parent / "docs" / "configuration-reference.md").read_text()
    listener_tls = reference.split("## `[dicom_listener.tls]`", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in listener_tls.splitlines() if line.startswith("| `verify_hostname`")]
    assert "Ignored on the listener" in row
    destination_tls = reference.split("## `[destination.tls]`", 1)[1].split("\n## ", 1)[0]
    assert "Check the peer's certificate names the host." in destination_tls
