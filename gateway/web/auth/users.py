"""Panel accounts: user name, role and argon2id password hash (throttling: auth.throttle).

There is no default account and no default password: the first engineer is created with the
one-time setup token (gateway.web.auth.setup). The last engineer can be neither removed nor
demoted, so the box always has someone who can manage accounts.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.clock import Clock
from gateway.sqltxn import transaction
from gateway.web.auth.commonpw import is_common
from gateway.web.auth.db import PanelDb

MIN_PASSWORD = 10
MAX_PASSWORD = 256  # argon2 takes any length; a bound keeps a login request cheap to refuse
USERNAME_RE = re.compile(r"[a-z][a-z0-9._-]{0,31}")


class Role(StrEnum):
    """What a user may do: engineers everything, technologists procedure, held objects, status."""

    ENGINEER = "engineer"
    TECHNOLOGIST = "technologist"


@dataclass(frozen=True)
class User:
    """A signed-in (or listed) panel user."""

    username: str
    role: Role

    @property
    def is_engineer(self) -> bool:
        """True for the engineer role."""
        return self.role is Role.ENGINEER


class AccountError(ValueError):
    """A refused account change; the message is safe to show to the user who asked."""


class UserStore:
    """The users table of the panel database; hashing with argon2id."""

    def __init__(self, db: PanelDb, clock: Clock, hasher: PasswordHasher | None = None) -> None:
        self._db = db
        self._clock = clock
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        # Verified against when the name is unknown, so a login takes as long either way.
        self._dummy = self._hasher.hash("not a password of anyone")

    def count(self) -> int:
        """How many accounts exist."""
        with self._db.connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def list(self) -> list[User]:
        """Every account, by name."""
        with self._db.connect() as conn:
            rows = conn.execute("SELECT username, role FROM users ORDER BY username").fetchall()
        return [User(name, Role(role)) for name, role in rows]

    def get(self, username: str) -> User | None:
        """The account with this name, or None."""
        with self._db.connect() as conn:
            row = conn.execute(
                "SELECT username, role FROM users WHERE username = ?", (username,)
            ).fetchone()
        return None if row is None else User(row[0], Role(row[1]))

    def create(
        self, username: str, password: str, role: Role, *, only_if_none: bool = False
    ) -> User:
        """Add an account; ``only_if_none``: refuse unless it is the very first one (setup)."""
        check_username(username)
        check_password(password, username)
        digest = self._hasher.hash(password)
        with self._db.connect() as conn, transaction(conn):
            if only_if_none and conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]:
                raise AccountError("the panel is already set up; log in instead")
            if conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise AccountError(f"user {username} already exists")
            conn.execute(
                "INSERT INTO users (username, role, password_hash, created_at) VALUES (?,?,?,?)",
                (username, str(role), digest, self._clock.now()),
            )
        return User(username, role)

    def verify(self, username: str, password: str) -> User | None:
        """The user if the password is right, else None; takes the same time for unknown names."""
        with self._db.connect() as conn:
            row = conn.execute(
                "SELECT role, password_hash FROM users WHERE username = ?", (username,)
            ).fetchone()
        if row is None or len(password) > MAX_PASSWORD:
            _quietly_verify(self._hasher, self._dummy, password[:MAX_PASSWORD])
            return None
        role, digest = row
        if not _quietly_verify(self._hasher, digest, password):
            return None
        if self._hasher.check_needs_rehash(digest):
            self._store_hash(username, self._hasher.hash(password))
        return User(username, Role(role))

    def set_password(self, username: str, password: str) -> None:
        """Replace the password (the caller ends the user's other sessions)."""
        check_password(password, username)
        if self.get(username) is None:
            raise AccountError(f"no user {username}")
        self._store_hash(username, self._hasher.hash(password))

    def set_role(self, username: str, role: Role) -> None:
        """Change the role; the last engineer cannot become a technologist."""
        with self._db.connect() as conn, transaction(conn):
            current = _role_of(conn, username)
            if current is Role.ENGINEER and role is not Role.ENGINEER:
                _keep_one_engineer(conn)
            conn.execute("UPDATE users SET role = ? WHERE username = ?", (str(role), username))

    def delete(self, username: str) -> None:
        """Remove the account and its sessions; the last engineer cannot be removed."""
        with self._db.connect() as conn, transaction(conn):
            if _role_of(conn, username) is Role.ENGINEER:
                _keep_one_engineer(conn)
            conn.execute("DELETE FROM users WHERE username = ?", (username,))

    def _store_hash(self, username: str, digest: str) -> None:
        with self._db.connect() as conn, transaction(conn):
            conn.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?", (digest, username)
            )


def check_username(username: str) -> None:
    """Refuse a name that is not 1-32 lower-case letters, digits, '.', '_' or '-'."""
    if not USERNAME_RE.fullmatch(username):
        raise AccountError(
            "user names are 1 to 32 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )


def check_password(password: str, username: str) -> None:
    """Refuse a password that is too short, too long, the user name itself (in any case), or
    one of the commonest (gateway.web.auth.commonpw): at setup, for a new user and at a change."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password may have at most {MAX_PASSWORD} characters")
    if password.strip().lower() == username.lower():
        raise AccountError("the password must not be the user name")
    if is_common(password):
        raise AccountError(
            "this password is one of the commonest, the first a guesser tries: choose another "
            "(a few unrelated words make a good one)"
        )


def _quietly_verify(hasher: PasswordHasher, digest: str, password: str) -> bool:
    try:
        return hasher.verify(digest, password)
    except (VerificationError, InvalidHashError):
        return False


def _role_of(conn: sqlite3.Connection, username: str) -> Role:
    row = conn.execute("SELECT role FROM users WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise AccountError(f"no user {username}")
    return Role(row[0])


def _keep_one_engineer(conn: sqlite3.Connection) -> None:
    engineers = conn.execute("SELECT COUNT(*) FROM users WHERE role = 'engineer'").fetchone()[0]
    if engineers <= 1:
        raise AccountError("the last engineer cannot be removed or demoted")
