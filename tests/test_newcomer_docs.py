"""The README's commands and the getting-started configuration work as printed (issue 11, 9, 12).

The README is read in the shell where `make demo` ran: the checkout is the working directory
and the virtualenv's bin folder is not on PATH (make cannot change its parent's PATH).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.cli import build_parser

TREE = Path(__file__).resolve().parent.parent
README = TREE / "README.md"
GETTING_STARTED = TREE / "docs" / "getting-started.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def code_blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def readme_commands() -> list[str]:
    """Every dicom-gateway command line in the README: in sh blocks and in inline code."""
    text = README.read_text("utf-8")
    found = []
    for block in code_blocks(text, "sh"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and Path(line.split()[0]).name == "dicom-gateway":
                found.append(line)
    prose = FENCE.sub("", text)
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = span.split()
        if len(words) > 1 and Path(words[0]).name == "dicom-gateway":
            found.append(span)
    return found


def venv_command() -> str:
    """Where the Makefile puts the console script, relative to the checkout."""
    makefile = (TREE / "Makefile").read_text("utf-8")
    venv = re.search(r"^VENV \?= (\S+)$", makefile, re.M)
    assert venv is not None and re.search(r"^BIN := \$\(VENV\)/bin$", makefile, re.M)
    scripts = tomllib.loads((TREE / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert "dicom-gateway" in scripts
    return f"{venv.group(1)}/bin/dicom-gateway"


def test_every_readme_command_runs_as_printed_after_make_demo(tmp_path: Path) -> None:
    commands = readme_commands()
    assert any(c.split()[1:3] == ["demo", "--duration"] for c in commands), commands
    program = venv_command()
    # The checkout after `make demo`: its virtualenv is the one running these tests.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / Path(program).parts[0]).symlink_to(Path(sys.prefix))
    venv_bin = str((Path(sys.prefix) / "bin").resolve())
    path = [p for p in os.environ["PATH"].split(os.pathsep) if str(Path(p).resolve()) != venv_bin]
    env = {**os.environ, "PATH": os.pathsep.join(path)}
    parser = build_parser()
    for command in commands:
        words = shlex.split(command)
        assert words[0] == program, f"{command!r}: a bare dicom-gateway exits 127 after make demo"
        try:
            parser.parse_args(words[1:])
        except SystemExit as exc:
            pytest.fail(f"{command!r}: the command line does not parse ({exc})")
        # The program and its verb are found from the checkout, as printed (--help: no side
        # effects, and no PACS or 20 s demo needed to prove that the line resolves).
        shown = subprocess.run(
            ["bash", "-c", f"{command} --help"],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, (command, shown.stderr)
        assert shown.stdout.startswith("usage: dicom-gateway"), shown.stdout


def minimal_config() -> str:
    """The block under "A minimal gateway.toml" in docs/getting-started.md."""
    text = GETTING_STARTED.read_text("utf-8")
    section = text.split("## A minimal gateway.toml", 1)[1].split("\n## ", 1)[0]
    blocks = code_blocks(section, "toml")
    assert blocks, "no toml block under 'A minimal gateway.toml'"
    return blocks[0]


def test_the_minimal_config_in_the_docs_is_accepted_by_check_config(tmp_path: Path) -> None:
    text = minimal_config()
    parsed = tomllib.loads(text)
    # What the page promises: a plain-TCP PACS on port 104, [destination.tls] left out.
    (destination,) = parsed["destination"]
    assert destination["port"] == 104
    assert "tls" not in destination
    config = tmp_path / "gateway.toml"
    config.write_text(text, "utf-8")
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "destination pacs: PACS@pacs.example.org:104 (plain TCP)" in checked.stdout
