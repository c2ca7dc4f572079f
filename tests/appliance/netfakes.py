"""A recording stand-in for the keeper's SystemRunner (systemctl, networkctl, sethostname)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.appliance.nettrial import CommandResult


class FakeRunner:
    """Records every command; the ones in ``failing`` fail, the others succeed."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, ...]] = []
        self.hostnames: list[str] = []
        self.failing: set[tuple[str, ...]] = set()

    def run(self, argv: Sequence[str]) -> CommandResult:
        self.commands.append(tuple(argv))
        failed = tuple(argv) in self.failing
        return CommandResult(tuple(argv), 1 if failed else 0, "unit not found" if failed else "")

    def set_hostname(self, name: str) -> None:
        self.hostnames.append(name)
