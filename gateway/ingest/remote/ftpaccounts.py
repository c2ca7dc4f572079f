"""The devices' FTP accounts: one per folder (``ftp_user``), an argon2id hash each.

The FTP receiver (gateway.ingest.remote.ftp) has no Unix accounts behind it: an account is a
name from the config and a hash in ``<state_dir>/ftp/accounts.json`` (0600, the gateway's own,
on the data partition), set in the panel (gateway.web.pages.devices), never shown back, never
logged. The file is replaced whole and durably (temporary file, fsync, rename), so the receiver,
which reads it at every login, sees the old or the new password, never half of one; a change
needs no restart.

An account without a hash has no password: every login to it is refused. There is no default
password and no anonymous login.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.spool.durable import write_bytes_durably

ACCOUNTS_FILE = "accounts.json"
FORMAT_VERSION = 1


def ftp_dir(state_dir: Path) -> Path:
    """Where the FTP receiver keeps its accounts (and nothing else)."""
    return state_dir / "ftp"


class FtpAccountsError(Exception):
    """The accounts file cannot be read or written; the message says which and why."""


class FtpAccounts:
    """The hashes in ``<directory>/accounts.json``; safe to share between threads."""

    def __init__(self, directory: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = directory / ACCOUNTS_FILE
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self._lock = threading.Lock()  # one writer at a time: two panel posts lose nothing
        # Verified against when the account has no hash, so a refusal takes as long either way.
        self._dummy = self._hasher.hash("not a password of any device")

    def _read(self) -> dict[str, str]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise FtpAccountsError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(raw)
            hashes = data["accounts"]
            if data.get("version") != FORMAT_VERSION or not isinstance(hashes, dict):
                raise ValueError("unknown format")
        except (ValueError, KeyError, TypeError) as exc:
            raise FtpAccountsError(f"{self.path} is not an accounts file: {exc}") from exc
        return {str(k): str(v) for k, v in hashes.items()}

    def accounts(self) -> set[str]:
        """The accounts that have a password."""
        return set(self._read())

    def set_password(self, account: str, password: str) -> None:
        """Give ``account`` this password (replacing any other); FtpAccountsError if not."""
        digest = self._hasher.hash(password)
        with self._lock:
            hashes = self._read()
            hashes[account] = digest
            body = json.dumps({"version": FORMAT_VERSION, "accounts": hashes}, sort_keys=True)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_bytes_durably(self.path, body.encode() + b"\n", 0o600)
            except OSError as exc:
                raise FtpAccountsError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def verify(self, account: str, password: str) -> bool:
        """Whether ``password`` is ``account``'s; False for an account without a password."""
        try:
            digest = self._read().get(account)
        except FtpAccountsError:
            digest = None  # a broken file lets nobody in; the panel shows why
        try:
            self._hasher.verify(digest or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return False
        return digest is not None
