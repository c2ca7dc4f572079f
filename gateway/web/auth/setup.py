"""The one-time setup token: the only way to create the first engineer account.

While no account exists, the daemon makes a random token at start, stores its SHA-256 in the
panel database and the token itself in ``<state_dir>/web/setup-token`` (mode 0600: only root
and the daemon's user can read it), and logs it once. ``dicom-gateway setup-token`` prints the
file. Creating the first engineer with it deletes both; from then on the token opens nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from pathlib import Path

from gateway.clock import Clock
from gateway.sqltxn import transaction
from gateway.web.auth.db import PanelDb, web_dir, write_private
from gateway.web.auth.users import AccountError, Role, User, UserStore

TOKEN_FILE = "setup-token"  # noqa: S105 - a file name, not a secret
# The message, not a token; where to read the token on the appliance and on a package install.
WRONG_TOKEN = (
    "the setup token is not right (see the box's console or SETUP-TOKEN.txt on its card; "  # noqa: S105
    "on a package install, `dicom-gateway setup-token`)"
)


def token_path(state_dir: Path) -> Path:
    """Where the clear setup token is kept while the panel is not set up."""
    return web_dir(state_dir) / TOKEN_FILE


def read_token(state_dir: Path) -> str | None:
    """The setup token in the file, or None when there is none (set up, or never started)."""
    try:
        return token_path(state_dir).read_text("ascii").strip() or None
    except FileNotFoundError:
        return None


def _digest(token: str) -> str:
    return hashlib.sha256(token.strip().lower().encode()).hexdigest()


def new_token() -> str:
    """80 random bits as five groups of four hex digits, easy to read off a log and type."""
    raw = secrets.token_hex(10)
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


class SetupToken:
    """Makes, checks and consumes the setup token."""

    def __init__(self, db: PanelDb, state_dir: Path, users: UserStore, clock: Clock) -> None:
        self._db = db
        self._path = token_path(state_dir)
        self._users = users
        self._clock = clock

    @property
    def needed(self) -> bool:
        """True while no account exists (the panel shows /setup instead of /login)."""
        return self._users.count() == 0

    def ensure(self) -> str | None:
        """At start: the token to log when setup is needed (kept across restarts), else None."""
        if not self.needed:
            self._discard()
            return None
        token = read_token(self._path.parent.parent)
        with self._db.connect() as conn:
            row = conn.execute("SELECT token_hash FROM setup_token WHERE id = 1").fetchone()
        if token is not None and row is not None and hmac.compare_digest(row[0], _digest(token)):
            return token
        token = new_token()
        with self._db.connect() as conn, transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO setup_token (id, token_hash, created_at) VALUES (1,?,?)",
                (_digest(token), self._clock.now()),
            )
        write_private(self._path, token + "\n")
        return token

    def check(self, token: str) -> bool:
        """True if ``token`` is the current setup token (compared in constant time)."""
        with self._db.connect() as conn:
            row = conn.execute("SELECT token_hash FROM setup_token WHERE id = 1").fetchone()
        return row is not None and hmac.compare_digest(row[0], _digest(token))

    def create_first_engineer(self, token: str, username: str, password: str) -> User:
        """Spend the token on the first engineer account; refused once any account exists."""
        if not self.check(token):
            raise AccountError(WRONG_TOKEN)
        user = self._users.create(username, password, Role.ENGINEER, only_if_none=True)
        self._discard()
        return user

    def _discard(self) -> None:
        with self._db.connect() as conn:
            conn.execute("DELETE FROM setup_token")
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
