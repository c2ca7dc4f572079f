"""Panel accounts, sessions, login throttling and first-run setup, bundled as :class:`PanelAuth`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher

from gateway.clock import Clock
from gateway.config import WebSection
from gateway.web.auth.db import PanelDb
from gateway.web.auth.sessions import SessionStore
from gateway.web.auth.setup import SetupToken
from gateway.web.auth.throttle import LoginThrottle
from gateway.web.auth.users import Role, User, UserStore

__all__ = ["PanelAuth", "Role", "User", "open_auth"]


@dataclass(frozen=True)
class PanelAuth:
    """Everything the panel needs to know who is asking."""

    users: UserStore
    sessions: SessionStore
    throttle: LoginThrottle
    setup: SetupToken


def open_auth(
    state_dir: Path, web: WebSection, clock: Clock, hasher: PasswordHasher | None = None
) -> PanelAuth:
    """Open (creating if needed) ``<state_dir>/web/panel.sqlite`` and build the stores."""
    db = PanelDb.under(state_dir)
    users = UserStore(db, clock, hasher)
    return PanelAuth(
        users=users,
        sessions=SessionStore(
            db, clock, web.session_idle_minutes * 60.0, web.session_max_hours * 3600.0
        ),
        throttle=LoginThrottle(clock, web.login_max_failures, web.lockout_minutes * 60.0),
        setup=SetupToken(db, state_dir, users, clock),
    )
