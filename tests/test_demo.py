"""`make demo` as a newcomer meets it (issue 11, items 9 and 10).

The demo is started as `make demo` starts it, by the virtualenv's console script, from a shell
whose PATH does not hold the virtualenv's bin folder (make cannot change its parent's PATH).
Every command the demo prints, on the console or in the configuration it writes, is then run
as printed with ``bash -c`` in that same environment.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset

from gateway.demo.console import DemoConsole, delivery_line, stop_hint
from tests.harness import wait_until

VENV_BIN = Path(sys.executable).parent
SCRIPT = VENV_BIN / "dicom-gateway"  # what the Makefile's `demo` target runs
# Four sample files, and with socat three vital-signs reports from the simulated device.
EXPECTED = 4 + (3 if shutil.which("socat") else 0)
# A command we printed: a word naming the dicom-gateway program, after a blank or at the start
# of the line, up to the end of the line (so `dicom-gateway demo` in backquotes is prose).
PRINTED = re.compile(r"(?:^|(?<=\s))((?:\S*/)?dicom-gateway\s.*)$")
ERROR_LINE = re.compile(r'"level": "(error|critical)"')


def shell_env() -> dict[str, str]:
    """The environment of the shell `make demo` ran in: no virtualenv on PATH."""
    keep = [
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and Path(p).resolve() != VENV_BIN.resolve()
    ]
    env = {**os.environ, "PATH": os.pathsep.join(keep), "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    return env


class Console:
    """A process started like a command typed in a terminal: its own process group, so a
    Ctrl-C (SIGINT to the whole foreground group) reaches it and every child it started."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=shell_env(),
            cwd=cwd,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def count(self, prefix: str) -> int:
        return sum(1 for line in self.lines if line.startswith(prefix))

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def terminate(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def consoles() -> Iterator[list[Console]]:
    started: list[Console] = []
    yield started
    for console in started:
        console.stop()


def printed_commands(text: str) -> list[str]:
    return [m.group(1).strip() for line in text.splitlines() if (m := PRINTED.search(line))]


def run_printed(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env=shell_env(), cwd=cwd,
        timeout=90,
    )  # fmt: skip


def delivered_files(console: Console) -> list[str]:
    return [line.split()[2] for line in console.lines if line.startswith("demo: delivered ")]


def assert_no_error(console: Console) -> None:
    errors = [line for line in console.lines if ERROR_LINE.search(line)]
    assert errors == [], console.text


def test_the_venv_is_not_on_the_newcomers_path() -> None:
    # What makes a bare `dicom-gateway` exit 127 after `make demo` (the premise of the tests).
    assert SCRIPT.is_file()
    assert shutil.which("dicom-gateway", path=shell_env()["PATH"]) is None


def pacs_files(root: Path) -> list[str]:
    folder = root / "pacs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_demo_with_duration_stops_by_itself_and_what_it_printed_runs_as_printed(
    tmp_path: Path, consoles: list[Console]
) -> None:
    root = tmp_path / "demo"
    elsewhere = tmp_path / "elsewhere"  # the printed lines must not depend on the folder
    elsewhere.mkdir()
    demo = Console([str(SCRIPT), "demo", "--duration", "25", "--dir", str(root)], elsewhere)
    consoles.append(demo)
    assert wait_until(lambda: len(pacs_files(root)) >= EXPECTED, 90), demo.text
    # While it runs: the device command plays onto the demo's cable, as printed.
    device = [c for c in printed_commands(demo.text) if " simulate-device " in c]
    assert len(device) == (1 if shutil.which("socat") else 0), demo.text
    for command in device:
        played = run_printed(command, elsewhere)
        assert played.returncode == 0, (command, played.stdout, played.stderr)

    assert demo.wait(120) == 0, demo.text
    assert_no_error(demo)
    assert "press Ctrl-C to stop" not in demo.text
    assert demo.has("stops by itself after 25 s")
    # One line per delivered object, naming the file the demo PACS stored.
    stored = pacs_files(root)
    assert sorted(delivered_files(demo)) == stored
    # The working folder stays, and the demo says so before its summary (the last line).
    assert demo.has(f"demo: working folder   {root} is kept")
    assert demo.lines[-1] == f"demo: {len(stored)} received, 0 failed"

    on_console = [c for c in printed_commands(demo.text) if " simulate-device " not in c]
    assert any(" queue list " in c for c in on_console), demo.text
    for command in on_console:
        done = run_printed(command, elsewhere)
        assert done.returncode == 0, (command, done.stdout, done.stderr)

    # The generated configuration says how to run it again: both lines run as printed.
    in_config = printed_commands((root / "gateway.toml").read_text("utf-8"))
    assert {c.split()[1] for c in in_config} == {"demo", "run"}, in_config
    for command in in_config:
        again = Console(["bash", "-c", command], elsewhere)
        consoles.append(again)
        ready = "sample files dropped" if command.split()[1] == "demo" else '"gateway ready"'
        assert wait_until(lambda a=again, r=ready: a.has(r) or a.proc.poll() is not None, 60)
        assert again.proc.poll() is None, again.text
        again.ctrl_c()
        assert again.wait() == 0, again.text
        if command.split()[1] == "demo":
            assert_no_error(again)  # `run` alone rightly reports the demo's cable missing

    remove = [line.split("remove it with: ")[1] for line in demo.lines if "remove it with" in line]
    assert len(remove) == 1
    assert run_printed(remove[0], elsewhere).returncode == 0
    assert not root.exists()


def test_ctrl_c_stops_the_demo_without_an_error(tmp_path: Path, consoles: list[Console]) -> None:
    root = tmp_path / "demo"
    demo = Console([str(SCRIPT), "demo", "--dir", str(root)], tmp_path)
    consoles.append(demo)
    assert wait_until(lambda: len(pacs_files(root)) >= EXPECTED, 90), demo.text
    assert demo.has("press Ctrl-C to stop")
    # Ctrl-C in a terminal: SIGINT to the demo and to every child in its process group.
    demo.ctrl_c()
    assert demo.wait() == 0, demo.text
    assert_no_error(demo)  # was: "serial port lost; reopening with backoff" at error
    assert not demo.has("serial port lost")
    received = len(pacs_files(root))
    assert demo.lines[-1] == f"demo: {received} received, 0 failed"
    assert len(delivered_files(demo)) == received


def test_a_closed_console_ends_the_demo_and_its_cable(tmp_path: Path) -> None:
    # `make demo | head`: the banner meets a closed pipe. The gateway thread used to outlive
    # the dead main thread, so the process (and socat) ran on for good.
    root = tmp_path / "demo"
    proc = subprocess.Popen(
        [str(SCRIPT), "demo", "--dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=shell_env(),
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (root / "serial-gateway").exists()  # socat stopped (it removes its links)


def test_deliveries_wait_for_the_banner_and_lines_stay_whole() -> None:
    out = io.StringIO()
    console = DemoConsole(out)
    console.say("demo: working folder   /tmp/x")
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.PatientID = "DEMO002"
    console.event(delivery_line(Path("/tmp/x/pacs/000001.dcm"), ds))
    assert out.getvalue() == "demo: working folder   /tmp/x\n"
    console.say(f"demo: 4 sample files dropped; {stop_hint(20)}")
    console.open()
    console.event(delivery_line(Path("/tmp/x/pacs/000002.dcm"), Dataset()))
    assert out.getvalue().splitlines() == [
        "demo: working folder   /tmp/x",
        "demo: 4 sample files dropped; stops by itself after 20 s (Ctrl-C stops it sooner)",
        "demo: delivered        000001.dcm  Encapsulated PDF Storage  (patient DEMO002)",
        "demo: delivered        000002.dcm  unknown SOP class  (patient none)",
    ]
    assert stop_hint(None) == "press Ctrl-C to stop"
