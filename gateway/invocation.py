"""How to spell the `dicom-gateway` command so that the line we print runs as printed.

A command we print for a person to copy (the demo's "queue list", "simulate-device", the
generated config's "run it again") must work in the shell it was printed in. `make demo` runs
``.venv/bin/dicom-gateway``, whose folder is not on that shell's PATH (make cannot change its
parent's environment), and a box runs ``/opt/dicom-gateway/current/bin/dicom-gateway``: a bare
``dicom-gateway`` there exits 127. The rules, in order:

1. Started as the console script and the ``dicom-gateway`` found on PATH is that same file:
   ``dicom-gateway`` (the short form the docs use).
2. Started as the console script otherwise: its absolute path, as started (not with symlinks
   resolved: ``/opt/dicom-gateway/current`` is a symlink that an update moves, and the printed
   line must follow it).
3. Started as ``python -m gateway`` (or any other way): the interpreter's absolute path and
   ``-m gateway``.

Rule 2 also says how to put the command on PATH when it lives in a virtualenv (its
``activate`` script beside it). Pure: :func:`this_invocation` gathers the facts, the rest
decides.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPT_NAME = "dicom-gateway"  # [project.scripts] in pyproject.toml


@dataclass(frozen=True)
class Invocation:
    """How this process was started, as far as spelling its command goes."""

    argv0: Path  # sys.argv[0] made absolute against the working directory, symlinks kept
    interpreter: Path  # sys.executable
    script_on_path: bool  # `dicom-gateway` on PATH is the same file as argv0
    activate: Path | None  # the virtualenv's bin/activate beside argv0, if there is one

    @property
    def is_script(self) -> bool:
        """Started as the console script."""
        return self.argv0.name == SCRIPT_NAME


def command(invocation: Invocation) -> str:
    """The words that run this same program from the shell it was started in (rules above)."""
    if invocation.is_script:
        return SCRIPT_NAME if invocation.script_on_path else shlex.quote(str(invocation.argv0))
    return f"{shlex.quote(str(invocation.interpreter))} -m gateway"


def path_hint(invocation: Invocation) -> str | None:
    """How to type plain ``dicom-gateway`` instead, when the command is not on PATH; or None."""
    if not invocation.is_script or invocation.script_on_path or invocation.activate is None:
        return None
    activate = shlex.quote(str(invocation.activate))
    return f"`. {activate}` puts it on this shell's PATH as `{SCRIPT_NAME}`"


def this_invocation() -> Invocation:
    """The facts about the running process (the only I/O here)."""
    # absolute(), not resolve(): symlinks kept (rule 2).
    argv0 = Path(sys.argv[0]).absolute() if sys.argv and sys.argv[0] else Path()
    found = shutil.which(SCRIPT_NAME)
    same = False
    if found is not None and argv0.name == SCRIPT_NAME:
        try:
            same = Path(found).samefile(argv0)
        except OSError:
            same = False
    activate = argv0.parent / "activate"
    return Invocation(
        argv0=argv0,
        interpreter=Path(sys.executable),
        script_on_path=same,
        activate=activate if activate.is_file() else None,
    )
