"""Applying network settings like a display-settings dialog: on trial until confirmed.

Files (under the root, ``/`` on the box; /data is the data partition):

* ``/data/system/network.toml``: the applied settings (absent: the DHCP default);
* ``/data/system/network.pending.toml``: the settings on trial, present only during a trial;
* ``/data/system/network.trial.json``: the trial: its id, the boot it started in (boot id), its
  deadline on that boot's monotonic clock, the seconds allowed, who asked, the sha256 of the
  pending text.

The rules (:func:`trial_verdict` and :func:`confirm_verdict` decide, pure; :class:`NetworkKeeper`
does the I/O):

1. *Apply* refuses while a trial runs; otherwise it writes the pending file, then the trial
   record (both durably), then starts the rollback timer (a timer that does not start: no
   change, the trial is withdrawn), then renders the *pending* settings and has systemd
   reload them. ``network.toml`` is not touched: whatever happens next, the
   previous settings are still the applied ones.
2. *Confirm* counts only for the running trial (its id), before its deadline, and only when the
   request reached the box at an address the *new* settings gave it (:func:`confirm_verdict`):
   a static trial's address, or for DHCP an address a lease gives the box now. Then the pending
   file is renamed over network.toml (the commit point) and the trial record removed.
3. *Rollback* (the timer's check, :meth:`NetworkKeeper.rollback_due`; or at once when asked,
   :meth:`NetworkKeeper.revert`): a trial whose deadline
   passed, or that started in another boot, or a pending file without a trial record (an apply
   cut short): the pending file goes, the applied settings are rendered and reloaded, then the
   trial record goes (its removal ends the rollback; a rollback cut short is done again). A
   trial record without a pending file whose sha256 is that of network.toml was a confirm cut
   short: it is finished, not rolled back.
4. *Boot* (:meth:`NetworkKeeper.boot`, before systemd-networkd): a trial from an earlier boot
   is rolled back first, so a power cut during a trial brings the old settings back; then the
   applied settings (or the default, when network.toml is missing or does not validate) are
   rendered. The box is never left without settings it was reachable with.

Every step ends in a :class:`NetworkStatus` written to ``<spool>/status.json`` for the panel;
systemd is driven through a :class:`SystemRunner` (argv lists, never a shell) that tests fake.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import ipaddress
import json
import secrets
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from gateway.appliance.netlive import dhcp_addresses
from gateway.appliance.network import (
    APPLIED_FILE,
    HOSTNAME_MAX,
    HOSTNAME_RE,
    PENDING_FILE,
    NetworkSettings,
    default_network,
    parse_network,
    render,
    write_rendered,
)
from gateway.clock import Clock
from gateway.config import ConfigError
from gateway.netaddr import host_address
from gateway.spool.durable import fsync_dir, write_bytes_durably

TRIAL_FILE = APPLIED_FILE.with_name("network.trial.json")
SERIAL_FILE = APPLIED_FILE.with_name("serial")  # written by first boot
# Root's, not under the gateway's state folder: a root-owned folder inside one the gateway owns
# could be swapped for a symlink by the gateway (systemd-tmpfiles refuses to make one there:
# "unsafe path transition"). On /run: requests and the status need not outlive a boot (the boot
# render writes the status again; a trial at a reboot is rolled back from /data/system).
SPOOL_DIR = Path("/run/dicom-gateway-network")
STATUS_FILE = "status.json"
REQUESTS_DIR = "requests"
ROLLBACK_TIMER = "dicom-gateway-network-rollback.timer"
DEFAULT_CONFIRM_SECONDS = 120
MIN_CONFIRM_SECONDS = 30
MAX_CONFIRM_SECONDS = 600
MAX_REQUEST_BYTES = 64 * 1024

State = Literal["applied", "pending", "confirmed", "rolled_back", "refused", "failed"]


@dataclass(frozen=True)
class CommandResult:
    """What one command did."""

    argv: tuple[str, ...]
    returncode: int
    output: str = ""


class SystemRunner(Protocol):
    """How the keeper drives systemd: real commands on the box, a recording fake in tests."""

    def run(self, argv: Sequence[str]) -> CommandResult: ...

    def set_hostname(self, name: str) -> None: ...


class CommandRunner:
    """The real runner: each argv run without a shell, with a time limit."""

    def run(self, argv: Sequence[str]) -> CommandResult:
        try:
            done = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return CommandResult(tuple(argv), 127, str(exc))
        return CommandResult(tuple(argv), done.returncode, (done.stderr or done.stdout).strip())

    def set_hostname(self, name: str) -> None:
        # The kernel's (transient) name now; the static one is the hostname file, read at boot.
        if socket.gethostname() != name:
            socket.sethostname(name)


@dataclass(frozen=True)
class Trial:
    """A change on trial."""

    trial_id: str
    boot_id: str
    deadline: float  # monotonic seconds of that boot
    seconds: int
    actor: str
    started_at: float  # wall clock, for display only (the Pi's clock may jump when it syncs)
    sha256: str  # of the pending text

    @property
    def deadline_at(self) -> float:
        """Wall-clock estimate of the deadline, for display."""
        return self.started_at + self.seconds


@dataclass(frozen=True)
class NetworkStatus:
    """What the panel shows: the last outcome and the trial running, if any."""

    state: State
    message: str
    at: float
    applied_toml: str = ""
    pending_toml: str = ""
    trial: Trial | None = None
    problems: tuple[str, ...] = ()
    confirm_addresses: tuple[str, ...] = ()  # static trial: where a confirmation must arrive

    def to_json(self) -> str:
        """The status file's text."""
        return json.dumps(asdict(self), sort_keys=True, indent=1)


def read_status(spool: Path) -> NetworkStatus | None:
    """The status the root side last wrote; None when there is none (not an appliance)."""
    try:
        data = json.loads((spool / STATUS_FILE).read_text())
        trial = data.get("trial")
        return NetworkStatus(
            state=data["state"],
            message=str(data["message"]),
            at=float(data["at"]),
            applied_toml=str(data.get("applied_toml", "")),
            pending_toml=str(data.get("pending_toml", "")),
            trial=Trial(**trial) if isinstance(trial, dict) else None,
            problems=tuple(data.get("problems", ())),
            confirm_addresses=tuple(data.get("confirm_addresses", ())),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


Verdict = Literal["pending", "due", "other_boot"]


def trial_verdict(trial: Trial, boot_id: str, monotonic: float) -> Verdict:
    """Whether a trial still runs: ``due`` once its deadline passed, ``other_boot`` after a
    restart (the monotonic clock of another boot says nothing about this one)."""
    if trial.boot_id != boot_id:
        return "other_boot"
    return "due" if monotonic >= trial.deadline else "pending"


@dataclass(frozen=True)
class ConfirmVerdict:
    """Whether a confirmation counts, and if not why (shown to the engineer)."""

    counts: bool
    reason: str = ""


def confirm_addresses(settings: NetworkSettings) -> tuple[str, ...]:
    """The addresses a static trial gives the box (empty for DHCP: known once leased)."""
    address = settings.interface.address
    return () if address is None else (str(ipaddress.ip_interface(address).ip),)


def confirm_verdict(
    settings: NetworkSettings, local_address: str, leased: frozenset[str]
) -> ConfirmVerdict:
    """A confirmation counts when it reached the box at an address the new settings gave it:
    the static address, or with DHCP one a lease gives the box now (``leased``)."""
    here = host_address(local_address)
    if settings.interface.mode == "static":
        wanted = confirm_addresses(settings)
        if here in wanted:
            return ConfirmVerdict(True)
        return ConfirmVerdict(
            False, f"confirm from https://{wanted[0]}/ (this page came via {here})"
        )
    if here in leased:
        return ConfirmVerdict(True)
    if not leased:
        return ConfirmVerdict(False, "the box has no DHCP lease yet: wait and reload")
    return ConfirmVerdict(
        False, f"confirm from the leased address https://{sorted(leased)[0]}/ (not {here})"
    )


def read_boot_id(root: Path) -> str:
    """This boot's id (the kernel's random boot_id)."""
    try:
        return (root / "proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass
class NetworkKeeper:
    """The root side: renders, applies, confirms and rolls back (module docstring)."""

    root: Path
    runner: SystemRunner
    clock: Clock
    boot_id: Callable[[], str]
    spool: Path = field(default=SPOOL_DIR)

    def _p(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    @property
    def spool_dir(self) -> Path:
        """The spool as seen under the root."""
        return self._p(self.spool)

    # --- the files -------------------------------------------------------------------------

    def applied(self) -> tuple[NetworkSettings, str, tuple[str, ...]]:
        """The applied settings, their text and the problems that made it the default."""
        path = self._p(APPLIED_FILE)
        if not path.exists():
            return default_network(), "", ()
        try:
            text = path.read_text()
            return parse_network(text, APPLIED_FILE.name), text, ()
        except (OSError, UnicodeDecodeError) as exc:
            return default_network(), "", (f"{APPLIED_FILE}: cannot read: {exc}",)
        except ConfigError as exc:
            return default_network(), "", tuple(exc.problems)

    def trial(self) -> Trial | None:
        """The trial record, if any (one that cannot be read counts as an apply cut short)."""
        try:
            return Trial(**json.loads(self._p(TRIAL_FILE).read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return Trial("", "", 0.0, 0, "", 0.0, "")

    def _pending_text(self) -> str | None:
        try:
            return self._p(PENDING_FILE).read_text()
        except FileNotFoundError:
            return None

    def _remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._p(path).unlink()
            fsync_dir(self._p(path).parent)

    # --- the steps -------------------------------------------------------------------------

    def boot(self) -> NetworkStatus:
        """At boot, before systemd-networkd: a trial from an earlier boot is rolled back, then
        the settings in force are rendered (no reload: networkd has not started yet)."""
        self.spool_dir.joinpath(REQUESTS_DIR).mkdir(parents=True, exist_ok=True)
        trial = self.trial()
        pending = self._pending_text()
        if (trial is not None or pending is not None) and not self._trial_runs(trial, pending):
            return self._conclude(trial, reload=False, reason="the box restarted during the trial")
        if trial is not None and pending is not None:
            settings = parse_network(pending, PENDING_FILE.name)
            self._render(settings)
            return self._write_status("pending", "network change on trial", trial=trial)
        settings, _, problems = self.applied()
        self._render(settings)
        if problems:
            return self._write_status(
                "failed", f"{APPLIED_FILE} not used, DHCP default instead", problems=problems
            )
        return self._write_status("applied", "network settings applied at boot")

    def _trial_runs(self, trial: Trial | None, pending: str | None) -> bool:
        return (
            trial is not None
            and pending is not None
            and trial_verdict(trial, self.boot_id(), self.clock.monotonic()) == "pending"
        )

    def apply(self, text: str, actor: str, seconds: int) -> NetworkStatus:
        """Put ``text`` (a network.toml) on trial for ``seconds``."""
        self.rollback_due()
        if self.trial() is not None or self._pending_text() is not None:
            return self._write_status(
                "refused", "a network change is on trial already: confirm it or let it roll back"
            )
        if not MIN_CONFIRM_SECONDS <= seconds <= MAX_CONFIRM_SECONDS:
            return self._write_status(
                "refused",
                f"confirmation time {seconds} s is outside "
                f"{MIN_CONFIRM_SECONDS}-{MAX_CONFIRM_SECONDS} s",
            )
        try:
            settings = parse_network(text, PENDING_FILE.name)
        except ConfigError as exc:
            return self._write_status(
                "refused", "the settings do not validate", problems=tuple(exc.problems)
            )
        system = self._p(PENDING_FILE).parent
        system.mkdir(parents=True, exist_ok=True)
        write_bytes_durably(self._p(PENDING_FILE), text.encode(), 0o644)
        now = self.clock.monotonic()
        trial = Trial(
            trial_id=secrets.token_hex(8),
            boot_id=self.boot_id(),
            deadline=now + seconds,
            seconds=seconds,
            actor=actor,
            started_at=self.clock.now(),
            sha256=hashlib.sha256(text.encode()).hexdigest(),
        )
        write_bytes_durably(self._p(TRIAL_FILE), json.dumps(asdict(trial)).encode(), 0o644)
        # The deadline first: without a running timer nothing would roll back a change that
        # loses the panel, so the change is not made at all.
        timer = self.runner.run(["systemctl", "start", ROLLBACK_TIMER])
        if timer.returncode != 0:
            self._remove(PENDING_FILE)
            self._remove(TRIAL_FILE)
            return self._write_status(
                "failed",
                f"network change not made: the rollback timer did not start "
                f"({timer.returncode}): {timer.output[:200]}",
            )
        failed = self._render_and_reload(settings)
        if failed is not None:
            return self._conclude(trial, reload=True, reason=f"{failed}")
        return self._write_status(
            "pending",
            f"network change on trial: confirm from the new address within {seconds} s "
            "or the previous settings come back",
            trial=trial,
        )

    def confirm(self, trial_id: str, local_address: str) -> NetworkStatus:
        """A confirmation that reached the box at ``local_address``."""
        self.rollback_due()
        trial = self.trial()
        pending = self._pending_text()
        if trial is None or pending is None or trial.trial_id != trial_id:
            return self.refuse("no such network change on trial (already concluded?)")
        settings = parse_network(pending, PENDING_FILE.name)
        verdict = confirm_verdict(settings, local_address, dhcp_addresses(self.root))
        if not verdict.counts:
            return self.refuse(f"confirmation not counted: {verdict.reason}")
        applied = self._p(APPLIED_FILE)
        self._p(PENDING_FILE).replace(applied)  # the commit point
        fsync_dir(applied.parent)
        return self._finish_confirmed(trial)

    def _finish_confirmed(self, trial: Trial) -> NetworkStatus:
        self._remove(TRIAL_FILE)
        self.runner.run(["systemctl", "stop", ROLLBACK_TIMER])
        return self._write_status("confirmed", f"network change confirmed by {trial.actor}")

    def on_trial(self) -> bool:
        """Whether a trial (or what is left of one cut short) is on the box."""
        return self.trial() is not None or self._pending_text() is not None

    def revert(self, trial_id: str, actor: str) -> NetworkStatus:
        """Roll the running trial back now (the dialog's "Revert"), from any address."""
        self.rollback_due()
        trial = self.trial()
        if trial is None or trial.trial_id != trial_id:
            return self.refuse("no such network change on trial (already concluded?)")
        return self._conclude(trial, reload=True, reason=f"reverted by {actor}")

    def rollback_due(self) -> NetworkStatus | None:
        """The timer's check: conclude a trial that is over (rule 3); None when none is."""
        trial = self.trial()
        pending = self._pending_text()
        if trial is None and pending is None:
            return None
        if trial is not None and pending is None:
            applied = self._p(APPLIED_FILE)
            sha = hashlib.sha256(applied.read_bytes()).hexdigest() if applied.exists() else ""
            if sha == trial.sha256:
                return self._finish_confirmed(trial)
            return self._conclude(trial, reload=True, reason="the trial was cut short")
        if trial is None:
            return self._conclude(None, reload=True, reason="the change was cut short")
        verdict = trial_verdict(trial, self.boot_id(), self.clock.monotonic())
        if verdict == "pending":
            return None
        if verdict == "other_boot":
            return self._conclude(trial, reload=True, reason="the box restarted during the trial")
        return self._conclude(trial, reload=True, reason=f"not confirmed within {trial.seconds} s")

    def _conclude(self, trial: Trial | None, *, reload: bool, reason: str) -> NetworkStatus:
        """Roll back: the pending file goes, the applied settings come back, the record last."""
        self._remove(PENDING_FILE)
        settings, _, problems = self.applied()
        if reload:
            self._render_and_reload(settings)
        else:
            self._render(settings)
        self._remove(TRIAL_FILE)
        self.runner.run(["systemctl", "stop", ROLLBACK_TIMER])
        return self._write_status(
            "rolled_back", f"network change rolled back: {reason}", problems=problems
        )

    # --- systemd ---------------------------------------------------------------------------

    def _render(self, settings: NetworkSettings) -> None:
        write_rendered(self.root, render(settings, self.default_hostname()))
        name = settings.hostname or self.default_hostname()
        if name is not None:
            self.runner.set_hostname(name)

    def default_hostname(self) -> str | None:
        """``dicom-gateway-<serial>`` once first boot stored the serial, else None."""
        try:
            serial = self._p(SERIAL_FILE).read_text().strip()
        except OSError:
            return None
        name = f"dicom-gateway-{serial}"
        return name if HOSTNAME_RE.match(name) and len(name) <= HOSTNAME_MAX else None

    def _render_and_reload(self, settings: NetworkSettings) -> str | None:
        """Render and have networkd and timesyncd take it; the first failure, or None."""
        self._render(settings)
        commands: list[list[str]] = [["networkctl", "reload"]]
        links = self.links(settings)
        if links:
            commands.append(["networkctl", "reconfigure", *links])
        commands.append(["systemctl", "restart", "systemd-timesyncd.service"])
        for argv in commands:
            done = self.runner.run(argv)
            if done.returncode != 0:
                return f"{' '.join(argv)} failed ({done.returncode}): {done.output[:200]}"
        return None

    def links(self, settings: NetworkSettings) -> list[str]:
        """The box's links the settings match (networkd reconfigures those)."""
        try:
            names = sorted(p.name for p in self._p(Path("/sys/class/net")).iterdir())
        except OSError:
            return []
        return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in settings.interface.name)]

    # --- status ----------------------------------------------------------------------------

    def _write_status(
        self,
        state: State,
        message: str,
        *,
        trial: Trial | None = None,
        problems: tuple[str, ...] = (),
    ) -> NetworkStatus:
        pending = self._pending_text() if trial is not None else None
        addresses: tuple[str, ...] = ()
        if pending is not None:
            with contextlib.suppress(ConfigError):
                addresses = confirm_addresses(parse_network(pending))
        status = NetworkStatus(
            state=state,
            message=message,
            at=self.clock.now(),
            applied_toml=self.applied()[1],
            pending_toml=pending or "",
            trial=trial,
            problems=problems,
            confirm_addresses=addresses,
        )
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_durably(self.spool_dir / STATUS_FILE, status.to_json().encode(), 0o640)
        return status

    def refuse(self, message: str) -> NetworkStatus:
        """Report a refused request or confirmation; a trial that runs goes on."""
        trial = self.trial()
        return self._write_status("pending" if trial else "refused", message, trial=trial)
