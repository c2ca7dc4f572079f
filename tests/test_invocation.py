"""How the printed `dicom-gateway` command is spelled (issue 11, item 9): the rules alone."""

from __future__ import annotations

from pathlib import Path

from gateway.invocation import Invocation, command, path_hint

VENV = Path("/home/me/dicom gateway/.venv")
PYTHON = VENV / "bin" / "python"


def started(argv0: Path, *, on_path: bool = False, activate: bool = True) -> Invocation:
    return Invocation(
        argv0=argv0,
        interpreter=PYTHON,
        script_on_path=on_path,
        activate=argv0.parent / "activate" if activate else None,
    )


def test_the_console_script_on_path_is_spelled_short() -> None:
    invocation = started(VENV / "bin" / "dicom-gateway", on_path=True)
    assert command(invocation) == "dicom-gateway"
    assert path_hint(invocation) is None


def test_the_console_script_off_path_is_spelled_in_full_and_says_how_to_activate() -> None:
    invocation = started(VENV / "bin" / "dicom-gateway")
    assert command(invocation) == "'/home/me/dicom gateway/.venv/bin/dicom-gateway'"
    assert path_hint(invocation) == (
        "`. '/home/me/dicom gateway/.venv/bin/activate'` puts it on this shell's PATH"
        " as `dicom-gateway`"
    )


def test_a_box_keeps_the_current_symlink_in_the_path() -> None:
    # /opt/dicom-gateway/current moves with each update: the printed line must follow it.
    box = started(Path("/opt/dicom-gateway/current/bin/dicom-gateway"), activate=False)
    assert command(box) == "/opt/dicom-gateway/current/bin/dicom-gateway"
    assert path_hint(box) is None


def test_python_dash_m_is_spelled_with_the_interpreter() -> None:
    invocation = started(Path("/src/gateway/__main__.py"))
    assert command(invocation) == "'/home/me/dicom gateway/.venv/bin/python' -m gateway"
    assert path_hint(invocation) is None
