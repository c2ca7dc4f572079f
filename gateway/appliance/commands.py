"""The system commands boot steps run (sfdisk, partx, resize2fs, ssh-keygen), behind a Protocol.

Steps get a :class:`Runner`; the CLI passes :class:`SubprocessRunner`, tests pass a fake that
records the command lines and answers as the tool would (or the real runner on an image file).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

COMMAND_TIMEOUT = 300.0  # resize2fs of a large card takes a while; anything longer is hung


@dataclass(frozen=True)
class CommandResult:
    """What a command did."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(RuntimeError):
    """A command failed; the step fails and is tried again at the next boot."""

    def __init__(self, result: CommandResult) -> None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        super().__init__(
            f"{' '.join(result.argv)} exited {result.returncode}: {' / '.join(tail) or 'no output'}"
        )
        self.result = result


class Runner(Protocol):
    """Runs one command to completion."""

    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult: ...


class SubprocessRunner:
    """The real commands, no shell, with a timeout."""

    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        try:
            done = subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return CommandResult(tuple(argv), 124, "", f"timed out after {COMMAND_TIMEOUT:.0f} s")
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def check(result: CommandResult) -> CommandResult:
    """``result`` if the command succeeded, else raise :class:`CommandError`."""
    if result.returncode != 0:
        raise CommandError(result)
    return result
