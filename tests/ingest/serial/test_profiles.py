"""Loading device profiles: built-ins, files, and every kind of mistake reported with its line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.cli_profile import register
from gateway.config import ConfigError
from gateway.identity import PatientIdentity
from gateway.ingest.serial.astm_link import AstmReceiver
from gateway.ingest.serial.linekv import LineKvEngine
from gateway.ingest.serial.printcap import PrintCaptureEngine
from gateway.ingest.serial.profile import LineKvProtocol, PrintCaptureProtocol
from gateway.ingest.serial.profiles import (
    IdentityPatterns,
    ProfileError,
    list_builtin,
    load_profile,
    make_engine,
    merge_identity,
    parse_profile,
)

LINE_KV = """\
name = "bench-monitor"

[link]
protocol = "line-kv"
encoding = "utf-8"
terminator_pattern = '^END$'

[[measurement]]
match = "HR"
concept = { value = "8867-4", scheme = "LN", meaning = "Heart rate" }
unit = "/min"
device_units = { "bpm" = "/min" }

[simulator]
messages = ["HR: 60 bpm\\nEND\\n"]
"""


def write(tmp_path: Path, text: str, name: str = "device.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(text.encode(), label="device.toml")
    return info.value.problems


def test_builtins_are_listed_and_each_loads_under_its_own_name() -> None:
    names = list_builtin()
    assert {"astm-e1394", "line-kv", "print-capture"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.link.protocol == name
        assert profile.simulator.messages, f"{name} has no simulator messages"


def test_builtins_load_from_an_installed_copy_outside_the_source_tree(tmp_path: Path) -> None:
    # importlib.resources, not a path next to the source: run from a directory without gateway/.
    code = "from gateway.ingest.serial.profiles import load_profile as l; print(l('line-kv').name)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "line-kv"


def test_a_profile_file_loads_by_path_and_relative_to_a_base(tmp_path: Path) -> None:
    path = write(tmp_path, LINE_KV)
    assert load_profile(str(path)).name == "bench-monitor"
    assert load_profile(path).name == "bench-monitor"
    assert load_profile("device.toml", base=tmp_path).name == "bench-monitor"


def test_an_unknown_builtin_name_lists_the_builtins() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("no-such-device")
    assert "line-kv" in info.value.problems[0]
    assert "no such built-in profile" in info.value.problems[0]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile file not found"):
        load_profile(str(tmp_path / "absent.toml"))


def test_toml_syntax_and_encoding_errors_name_the_file() -> None:
    with pytest.raises(ProfileError, match=r"device.toml: TOML syntax error"):
        parse_profile(b"name = ", label="device.toml")
    with pytest.raises(ProfileError, match=r"device.toml: not UTF-8"):
        parse_profile(b'name = "\xff"', label="device.toml")


def test_unknown_and_missing_keys_name_key_and_line() -> None:
    text = LINE_KV.replace('encoding = "utf-8"', 'encoding = "utf-8"\nbaud = 9600').replace(
        'unit = "/min"\n', ""
    )
    problems = problems_of(text)
    assert "link.baud (device.toml line 6): unknown key" in problems
    assert "measurement[0].unit (device.toml line 9): required key is missing" in problems


def test_every_problem_is_reported_at_once() -> None:
    text = (
        LINE_KV.replace("'^END$'", "'^(END$'")
        .replace('"utf-8"', '"utf-16"')
        .replace('unit = "/min"', 'unit = "beats per min"')
    )
    problems = problems_of(text)
    assert any(p.startswith("link.terminator_pattern (device.toml line 6)") for p in problems)
    assert any("not a regular expression" in p for p in problems)
    assert any(p.startswith("link.encoding (device.toml line 5)") for p in problems)
    assert any("not ASCII-compatible" in p for p in problems)
    assert "measurement[0].unit (device.toml line 11): not a UCUM code (no spaces)" in problems


@pytest.mark.parametrize(
    ("encoding", "message"),
    [("klingon", "unknown text encoding"), ("rot13", "not a text encoding")],
)
def test_encodings_are_checked_at_load(encoding: str, message: str) -> None:
    problems = problems_of(LINE_KV.replace('"utf-8"', f'"{encoding}"'))
    assert any(message in p for p in problems), problems


def test_field_pattern_needs_name_and_value_groups_and_no_others() -> None:
    text = LINE_KV.replace(
        "terminator_pattern = '^END$'", "field_pattern = '^(?P<label>\\w+)=(?P<value>\\d+)$'"
    )
    problems = problems_of(text)
    assert any("needs the named group(s) (?P<name>...)" in p for p in problems), problems
    assert any("unknown named group(s): label" in p for p in problems), problems


def test_a_pattern_that_matches_an_empty_line_is_refused() -> None:
    problems = problems_of(LINE_KV.replace("'^END$'", "'^\\s*$'"))
    assert any("matches an empty line" in p for p in problems), problems


def test_identity_patterns_need_their_group() -> None:
    text = LINE_KV.replace(
        "terminator_pattern = '^END$'",
        "patient_id_pattern = 'ID: (\\S+)'\npatient_name_pattern = 'Name: (?P<name>\\S+)'",
    )
    problems = problems_of(text)
    assert any(
        p.startswith("link.patient_id_pattern (device.toml line 6)") and "(?P<patient_id>...)" in p
        for p in problems
    ), problems
    assert any("(?P<family>...) or (?P<patient_name>...)" in p for p in problems), problems


def test_simulator_messages_must_fit_the_encoding() -> None:
    text = LINE_KV.replace('"utf-8"', '"ascii"').replace("HR: 60 bpm", "HR: 60 bpm µ")
    problems = problems_of(text)
    assert any(
        p.startswith("simulator.messages (device.toml line 15): message 1") for p in problems
    )


def test_print_capture_refuses_measurements_and_needs_an_output() -> None:
    text = """\
    name = "printer"
    [link]
    protocol = "print-capture"
    [output]
    text_pdf = false
    [[measurement]]
    match = "HR"
    concept = { value = "8867-4", scheme = "LN", meaning = "Heart rate" }
    unit = "/min"
    """
    problems = problems_of(textwrap.dedent(text))
    assert "output.text_pdf (device.toml line 5): a print job needs text_pdf or text_sr" in problems
    assert any(p.startswith("measurement[0].match (device.toml line 7)") for p in problems)


def test_protocol_settings_errors_drop_the_discriminator_from_the_key() -> None:
    problems = problems_of(LINE_KV.replace('encoding = "utf-8"', "idle_timeout = -1"))
    assert problems == ["link.idle_timeout (device.toml line 5): Input should be greater than 0"]


def test_make_engine_builds_each_protocols_engine() -> None:
    engines = {name: make_engine(load_profile(name), "port1", 4096) for name in list_builtin()}
    assert isinstance(engines["astm-e1394"], AstmReceiver)
    assert isinstance(engines["line-kv"], LineKvEngine)
    assert isinstance(engines["print-capture"], PrintCaptureEngine)


def test_engines_refuse_a_profile_of_another_protocol() -> None:
    with pytest.raises(ValueError, match="not a line-kv profile"):
        LineKvEngine(load_profile("print-capture"), "port1", 4096)
    with pytest.raises(ValueError, match="not a print-capture profile"):
        PrintCaptureEngine(load_profile("line-kv"), "port1", 4096)


def test_identity_patterns_build_a_person_name_from_family_and_given() -> None:
    link = LineKvProtocol(
        protocol="line-kv",
        patient_name_pattern=r"^NAME: (?P<family>[^,]+), (?P<given>.+)$",
        patient_id_pattern=r"^ID: (?P<patient_id>\S+)$",
    )
    found, notes = IdentityPatterns.of(link).find("NAME: DOE, JANE")
    assert found == {"patient_name": "DOE^JANE"}
    assert notes == []
    known = PatientIdentity(patient_id="P1", patient_name="FIRST^SEEN")
    assert merge_identity(known, found) == known  # the first value found wins


def test_an_identity_too_long_for_dicom_is_not_cut_but_counted() -> None:
    link = PrintCaptureProtocol(
        protocol="print-capture", accession_pattern=r"ACC: (?P<accession_number>\S+)"
    )
    found, notes = IdentityPatterns.of(link).find("ACC: " + "9" * 17)
    assert found == {}
    assert [n.counter for n in notes] == ["identity_unusable"]
    assert "9" not in notes[0].detail  # counts, never the value


def run_check_profile(argument: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["check-profile", argument])
    return int(args.func(args))


def test_check_profile_summarises_a_valid_profile_and_its_simulator_messages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_check_profile("line-kv") == 0
    out = capsys.readouterr().out
    assert "profile line-kv:" in out
    assert "HR -> LN 8867-4 'Heart rate' [/min]; device units 'bpm' -> /min" in out
    assert "measurements as comprehensive-sr, text as encapsulated-pdf" in out
    assert "message 3: 2 measurement(s) (HR, SpO2)" in out
    assert "unit_not_mapped (TEMP)" in out
    assert "PID-2001" not in out and "DOE" not in out  # which identity fields, not their values


def test_check_profile_reads_print_and_astm_simulator_messages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_check_profile("print-capture") == 0
    assert "message 1: text, 2 pages; identity: patient ID, name, accession" in (
        capsys.readouterr().out
    )
    assert run_check_profile("astm-e1394") == 0
    assert "message 1: 5 measurement(s) (pH, pCO2, pO2, GLU, LAC)" in capsys.readouterr().out


def test_check_profile_lists_problems_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, LINE_KV.replace("'^END$'", "'(('").replace('"utf-8"', '"nope"'))
    assert run_check_profile(str(path)) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert all(line.startswith("profile error: link.") for line in err)
