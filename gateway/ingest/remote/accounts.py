"""The devices' SMB accounts (Samba's passdb) and their password rule.

One account per shared folder, named in the config (``share_user``). The
password is set in the panel (gateway.web.pages.devices), never shown back, never logged and never
written anywhere but Samba's passdb (tdbsam in the gateway's ``<state_dir>/samba``), through
``pdbedit -a -t`` with the password on standard input, never on a command line. Samba keeps
only the NT hash. A Samba account needs a Unix user of the same name: ``ensure_unix_account``
makes a system user without home and with /usr/sbin/nologin (run as root by ``dicom-gateway
share prepare`` when dicom-gateway-smb.service starts); it owns nothing, since smbd writes every
file as the gateway (``force user``), and cannot log in anywhere.
"""

from __future__ import annotations

import contextlib
import pwd
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_DEVICE_PASSWORD = 127  # what Windows' own dialogs accept for an SMB password
NOLOGIN = "/usr/sbin/nologin"
COMMAND_TIMEOUT = 30.0

Runner = Callable[[Sequence[str], bytes], "subprocess.CompletedProcess[bytes]"]


def run_command(argv: Sequence[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run a Samba or account tool; the seam tests replace."""
    return subprocess.run(
        list(argv), input=stdin, capture_output=True, timeout=COMMAND_TIMEOUT, check=False
    )


class DeviceAccountError(Exception):
    """The password or the account cannot be used; the message says what to change."""


def check_device_password(password: str) -> None:
    """A device's password beyond the panel's own rule: what a device's setup screen can type."""
    if len(password) > MAX_DEVICE_PASSWORD:
        raise DeviceAccountError(
            f"a device password may have at most {MAX_DEVICE_PASSWORD} characters"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise DeviceAccountError("the password must not contain control characters")


@dataclass(frozen=True)
class AccountState:
    """What the panel shows of one device account: whether it has a password yet."""

    account: str
    folder: str
    has_password: bool
    problem: str = ""  # why the state could not be read (Samba missing, ...)


class SambaAccounts:
    """Samba's passdb in ``private_dir`` (the gateway's own folder, so no privilege is needed)."""

    def __init__(
        self, private_dir: Path, runner: Runner = run_command, pdbedit: str = "pdbedit"
    ) -> None:
        self.private_dir = private_dir
        self._run = runner
        self._pdbedit = pdbedit

    def _argv(self, *args: str) -> list[str]:
        # No smb.conf of its own: only where the passdb is matters, and /dev/null keeps a
        # system smb.conf (or its absence) from changing what pdbedit does.
        d = self.private_dir
        return [
            self._pdbedit,
            "--configfile=/dev/null",
            f"--option=private dir={d}",
            f"--option=passdb backend=tdbsam:{d / 'passdb.tdb'}",
            f"--option=lock directory={d / 'lock'}",
            f"--option=state directory={d / 'lock'}",
            f"--option=cache directory={d / 'lock'}",
            *args,
        ]

    def _prepare(self) -> None:
        (self.private_dir / "lock").mkdir(parents=True, exist_ok=True, mode=0o700)
        self.private_dir.chmod(0o700)

    def set_password(self, account: str, password: str) -> None:
        """Create the account or replace its password; DeviceAccountError with Samba's reason."""
        try:
            pwd.getpwnam(account)
        except KeyError:
            raise DeviceAccountError(
                f"the account {account} does not exist on the box yet: the share service makes "
                "it within seconds of applying a configuration with this share; try again"
            ) from None
        self._prepare()
        secret = f"{password}\n{password}\n".encode()
        result = self._run(self._argv("-a", "-u", account, "-t"), secret)
        if result.returncode != 0:
            raise DeviceAccountError(_reason(result))

    def accounts(self) -> set[str]:
        """Accounts that have a password in the passdb."""
        if not (self.private_dir / "passdb.tdb").exists():
            return set()
        result = self._run(self._argv("-L", "-w"), b"")
        if result.returncode != 0:
            raise DeviceAccountError(_reason(result))
        return {
            line.split(":", 1)[0]
            for line in result.stdout.decode("utf-8", "replace").splitlines()
            if ":" in line
        }


def _reason(result: subprocess.CompletedProcess[bytes]) -> str:
    text = (result.stderr or result.stdout).decode("utf-8", "replace")
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return f"Samba refused: {last[-1] if last else f'exit status {result.returncode}'}"


def ensure_unix_account(account: str, runner: Runner = run_command) -> bool:
    """Make the system user a Samba account needs (no home, no login); True when made now."""
    with contextlib.suppress(KeyError):
        pwd.getpwnam(account)
        return False
    result = runner(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            NOLOGIN,
            "--no-user-group",
            "--gid",
            "nogroup",
            "--comment",
            "DICOM gateway device account (SMB only)",
            account,
        ],
        b"",
    )
    if result.returncode != 0:
        raise DeviceAccountError(_reason(result))
    return True
