"""The devices' SMB accounts (Samba's passdb) and their password rule.

One account per shared folder, named in the config (``share_user``). The
password is set in the panel (gateway.web.pages.devices), never shown back, never logged and never
written anywhere but Samba's passdb (tdbsam in the gateway's ``<state_dir>/samba``), through
``pdbedit -a -t`` with the password on standard input, never on a command line. Samba keeps
only the NT hash. A Samba account needs a Unix user of the same name: ``ensure_unix_account``
makes a system user without home and with /usr/sbin/nologin (run as root by ``dicom-gateway
share prepare`` when dicom-gateway-smb.service starts); it owns nothing, since smbd writes every
file as the gateway (``force user``), and cannot log in anywhere.

On the appliance /etc is on the read-only root file system, where ``useradd`` cannot even take
its lock. There the account goes into libnss-extrausers' ``/var/lib/extrausers/passwd`` (on the
data partition; the image's nsswitch.conf reads it after /etc/passwd): one line, written by
temporary file and rename, with the lowest uid of ``EXTRAUSERS_UIDS`` no account uses, the
``nogroup`` group, no home and nologin. A box with that folder uses it; any other machine (a
``.deb`` install) gets ``useradd``.
"""

from __future__ import annotations

import contextlib
import pwd
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.spool.durable import write_bytes_durably

MAX_DEVICE_PASSWORD = 127  # what Windows' own dialogs accept for an SMB password
NOLOGIN = "/usr/sbin/nologin"
EXTRAUSERS_DIR = Path("/var/lib/extrausers")  # libnss-extrausers, the appliance's writable NSS
# The top of Debian's range for people's accounts (adduser counts up from 1000; the box has no
# login accounts at all): clear of the system range, where systemd-sysusers counts down from
# 999 and adduser --system up from 100, so an OS update's new system user can never take one,
# and of DynamicUser's 61184-65519.
EXTRAUSERS_UIDS = range(59000, 60000)
NOGROUP_GID = 65534
COMMENT = "DICOM gateway device account (SMB only)"
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
            # Samba enumerates the network interfaces at start (netlink); the gateway's unit
            # refuses AF_NETLINK, and pdbedit then stops ("Could not determine network
            # interfaces", seen on the booted box). It serves nothing: loopback will do.
            "--option=interfaces=127.0.0.1/8",
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


def extrausers_line(account: str, passwd_text: str, taken_uids: set[int]) -> str | None:
    """The passwd line for ``account`` in extrausers' ``passwd_text``; None when it is there.

    Pure: the uid is the lowest of EXTRAUSERS_UIDS neither in ``taken_uids`` (every account
    NSS knows) nor in the file; DeviceAccountError when the range is used up.
    """
    in_file = set()
    for line in passwd_text.splitlines():
        fields = line.split(":")
        if fields[0] == account:
            return None
        if len(fields) > 2 and fields[2].isdigit():
            in_file.add(int(fields[2]))
    free = [uid for uid in EXTRAUSERS_UIDS if uid not in taken_uids | in_file]
    if not free:
        raise DeviceAccountError("no free uid left for another device account")
    return f"{account}:x:{free[0]}:{NOGROUP_GID}:{COMMENT}:/nonexistent:{NOLOGIN}\n"


def _add_extrausers(account: str, folder: Path) -> bool:
    passwd = folder / "passwd"
    try:
        text = passwd.read_text("utf-8")
    except FileNotFoundError:
        text = ""
    line = extrausers_line(account, text, {p.pw_uid for p in pwd.getpwall()})
    if line is None:
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    try:
        write_bytes_durably(passwd, (text + line).encode("utf-8"), 0o644)
    except OSError as exc:
        raise DeviceAccountError(f"cannot write {passwd}: {exc.strerror or exc}") from exc
    return True


def ensure_unix_account(
    account: str, runner: Runner = run_command, extrausers: Path = EXTRAUSERS_DIR
) -> bool:
    """Make the system user a Samba account needs (no home, no login); True when made now.

    In ``extrausers`` when that folder exists (the appliance), else with useradd.
    """
    with contextlib.suppress(KeyError):
        pwd.getpwnam(account)
        return False
    if extrausers.is_dir():
        return _add_extrausers(account, extrausers)
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
            COMMENT,
            account,
        ],
        b"",
    )
    if result.returncode != 0:
        raise DeviceAccountError(_reason(result))
    return True
