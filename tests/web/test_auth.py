"""The account, session and setup-token stores on their own, with an injected clock (the
throttle's rules: test_throttle.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from gateway.clock import FakeClock
from gateway.config import WebSection
from gateway.web.auth import PanelAuth, open_auth
from gateway.web.auth.db import DB_FILE, web_dir
from gateway.web.auth.setup import read_token, token_path
from gateway.web.auth.users import AccountError, Role
from tests.web.panelkit import FAST_HASHER

WEB = WebSection(
    session_idle_minutes=30, session_max_hours=12, login_max_failures=3, lockout_minutes=15
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def auth(tmp_path: Path, clock: FakeClock) -> PanelAuth:
    return open_auth(tmp_path, WEB, clock, FAST_HASHER)


def test_passwords_are_stored_as_argon2id_hashes_only(tmp_path: Path, clock: FakeClock) -> None:
    auth = open_auth(tmp_path, WEB, clock)  # the panel's real parameters
    auth.users.create("eng", "a-long-secret-1", Role.ENGINEER)
    db = web_dir(tmp_path) / DB_FILE
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("panel.sqlite-*"))
    assert b"a-long-secret-1" not in raw
    assert b"$argon2id$" in raw
    assert auth.users.verify("eng", "a-long-secret-1") is not None
    assert auth.users.verify("eng", "a-long-secret-2") is None
    assert PasswordHasher().memory_cost >= 65536  # the default is RFC 9106's low-memory profile


def test_weak_passwords_and_bad_names_are_refused(auth: PanelAuth) -> None:
    with pytest.raises(AccountError, match="at least 10"):
        auth.users.create("eng", "short", Role.ENGINEER)
    with pytest.raises(AccountError, match="user name"):
        auth.users.create("engineer12", "Engineer12", Role.ENGINEER)
    with pytest.raises(AccountError, match="user names are"):
        auth.users.create("<script>", "a-long-secret-1", Role.ENGINEER)
    assert auth.users.count() == 0


@pytest.mark.parametrize(
    "password",
    [
        "1234567890",
        "qwertyuiop",
        "Password2024!",
        "Radiology#1",
        "administrator",
        "Correct Horse Battery Staple",
        "  Welcome123  ",
    ],
)
def test_the_commonest_passwords_are_refused_at_setup_creation_and_change(
    auth: PanelAuth, password: str
) -> None:
    token = auth.setup.ensure()
    assert token is not None
    with pytest.raises(AccountError, match="commonest"):
        auth.setup.create_first_engineer(token, "eng", password)
    auth.setup.create_first_engineer(token, "eng", "a-long-secret-1")
    with pytest.raises(AccountError, match="commonest"):
        auth.users.create("tech", password, Role.TECHNOLOGIST)
    with pytest.raises(AccountError, match="commonest"):
        auth.users.set_password("eng", password)
    assert auth.users.verify("eng", "a-long-secret-1") is not None


def test_a_password_equal_to_the_user_name_in_any_case_is_refused_at_change(
    auth: PanelAuth,
) -> None:
    auth.users.create("engineer12", "a-long-secret-1", Role.ENGINEER)
    for password in ("engineer12", "ENGINEER12", "Engineer12"):
        with pytest.raises(AccountError, match="must not be the user name"):
            auth.users.set_password("engineer12", password)
    auth.users.set_password("engineer12", "engineer12-but-longer")  # contains it: fine


def test_the_last_engineer_can_be_neither_removed_nor_demoted(auth: PanelAuth) -> None:
    auth.users.create("eng", "a-long-secret-1", Role.ENGINEER)
    auth.users.create("tech", "a-long-secret-1", Role.TECHNOLOGIST)
    with pytest.raises(AccountError, match="last engineer"):
        auth.users.delete("eng")
    with pytest.raises(AccountError, match="last engineer"):
        auth.users.set_role("eng", Role.TECHNOLOGIST)
    auth.users.set_role("tech", Role.ENGINEER)
    auth.users.delete("eng")
    assert [u.username for u in auth.users.list()] == ["tech"]


def test_sessions_end_after_the_idle_time(auth: PanelAuth, clock: FakeClock) -> None:
    auth.users.create("eng", "a-long-secret-1", Role.ENGINEER)
    new = auth.sessions.create("eng")
    clock.advance(29 * 60)
    assert auth.sessions.lookup(new.token) is not None  # used: the idle clock starts again
    clock.advance(29 * 60)
    assert auth.sessions.lookup(new.token) is not None
    clock.advance(31 * 60)
    assert auth.sessions.lookup(new.token) is None


def test_sessions_end_at_the_absolute_limit_even_when_used(
    auth: PanelAuth, clock: FakeClock
) -> None:
    auth.users.create("eng", "a-long-secret-1", Role.ENGINEER)
    new = auth.sessions.create("eng")
    for _ in range(12 * 4 + 1):
        clock.advance(15 * 60)
        if auth.sessions.lookup(new.token) is None:
            break
    assert auth.sessions.lookup(new.token) is None
    assert clock.now() - new.session.created_at <= 12 * 3600 + 15 * 60


def test_only_a_hash_of_the_session_id_is_stored(tmp_path: Path, auth: PanelAuth) -> None:
    auth.users.create("eng", "a-long-secret-1", Role.ENGINEER)
    new = auth.sessions.create("eng")
    db = web_dir(tmp_path) / DB_FILE
    raw = db.read_bytes() + b"".join(p.read_bytes() for p in db.parent.glob("panel.sqlite-*"))
    assert new.token.encode() not in raw
    assert auth.sessions.lookup(new.token + "x") is None
    assert new.session.csrf_token != new.token


def test_removing_a_user_ends_their_sessions(auth: PanelAuth) -> None:
    auth.users.create("eng", "a-long-secret-1", Role.ENGINEER)
    auth.users.create("tech", "a-long-secret-1", Role.TECHNOLOGIST)
    new = auth.sessions.create("tech")
    auth.users.delete("tech")
    assert auth.sessions.lookup(new.token) is None


def test_the_setup_token_is_kept_private_reused_and_spent_once(
    tmp_path: Path, auth: PanelAuth
) -> None:
    token = auth.setup.ensure()
    assert token is not None
    assert stat.S_IMODE(token_path(tmp_path).stat().st_mode) == 0o600
    assert read_token(tmp_path) == token
    assert auth.setup.ensure() == token  # a restart before setup shows the same token
    with pytest.raises(AccountError, match="setup token"):
        auth.setup.create_first_engineer("wrong", "eng", "a-long-secret-1")
    user = auth.setup.create_first_engineer(token.upper(), "eng", "a-long-secret-1")
    assert user.role is Role.ENGINEER
    assert read_token(tmp_path) is None
    assert not auth.setup.check(token)
    assert auth.setup.ensure() is None
    with pytest.raises(AccountError):
        auth.setup.create_first_engineer(token, "eng2", "a-long-secret-1")


def test_a_token_file_that_does_not_match_the_database_is_replaced(
    tmp_path: Path, auth: PanelAuth
) -> None:
    first = auth.setup.ensure()
    token_path(tmp_path).write_text("forged-token\n")
    second = auth.setup.ensure()
    assert second not in (first, "forged-token")
    assert auth.setup.check(second or "") and not auth.setup.check("forged-token")
