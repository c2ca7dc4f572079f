"""Who may use the panel: first-run setup, login, logout, one's own password, the user list.

/setup exists only while no account does: the setup token makes the first engineer. Every
password check (login, the setup token, the current password on /account) is throttled per
address and per account (gateway.web.auth.throttle). A password change ends the user's other
sessions; removing a user or changing a role ends all of theirs. Every change, and
every login and failed login, is in the audit log as ``web:<user>`` (no passwords, ever).
"""

from __future__ import annotations

import logging
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from gateway.logsetup import event
from gateway.web.auth import PanelAuth
from gateway.web.auth.setup import WRONG_TOKEN
from gateway.web.auth.throttle import Verdict
from gateway.web.auth.users import AccountError, Role, User
from gateway.web.deps import (
    SESSION_COOKIE,
    current_session,
    optional_user,
    panel_auth,
    read_form,
    require_engineer,
    require_technologist,
    web_actor,
)
from gateway.web.services import WebServices
from gateway.web.templating import NavLink, redirect, render, set_cookie

NAV = (NavLink("/users", "Users", Role.ENGINEER),)

log = logging.getLogger("gateway.web.login")

SETUP_ACCOUNT = ""  # the setup token is throttled as the password of a nameless account

Form = Annotated[FormData, Depends(read_form)]
Engineer = Annotated[User, Depends(require_engineer)]
Anyone = Annotated[User, Depends(require_technologist)]


def _field(form: FormData, name: str, limit: int = 300) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _start_session(auth: PanelAuth, user: User, flash: str) -> Response:
    new = auth.sessions.create(user.username)
    response = redirect("/", flash)
    set_cookie(response, SESSION_COOKIE, new.token)
    return response


def routes(services: WebServices) -> APIRouter:
    """/setup, /login, /logout, /account and /users."""
    router = APIRouter()
    audit = services.audit

    def note_attack(verdict: Verdict, account: str, address: str) -> None:
        """The account-wide budget (throttle rule 4) tripped: say so once, for a person to see
        (once per lockout period; the address is the one whose try tripped it)."""
        if not verdict.attack:
            return
        event(log, logging.WARNING, "login throttled: account under attack", user=account)
        audit.append(
            f"web:{account or '-'}",
            "login throttled: account under attack",
            f"user:{account}",
            {"address": address},
        )

    @router.get("/setup")
    def setup_page(request: Request) -> Response:
        if not panel_auth(request).setup.needed:
            return redirect("/login")
        return render(request, "setup.html", error=None, username="")

    @router.post("/setup")
    def setup_submit(request: Request, form: Form) -> Response:
        auth = panel_auth(request)
        if not auth.setup.needed:
            return redirect("/login", "The panel is already set up; log in.")
        address = _address(request)
        username = _field(form, "username").strip().lower()
        password = _field(form, "password", 1000)
        if password != _field(form, "password2", 1000):
            return render(
                request,
                "setup.html",
                status_code=422,
                error="The two passwords differ.",
                username=username,
            )
        token = _field(form, "token")
        verdict, begun = auth.throttle.begin(SETUP_ACCOUNT, address)
        note_attack(verdict, SETUP_ACCOUNT, address)
        if not verdict.allowed:
            return render(
                request, "setup.html", status_code=429, error=_wait_text(verdict), username=username
            )
        if not auth.setup.check(token):
            event(log, logging.WARNING, "wrong setup token", address=address)
            return render(
                request,
                "setup.html",
                status_code=422,
                error=WRONG_TOKEN,
                username=username,
            )
        auth.throttle.succeeded(SETUP_ACCOUNT, address, begun)
        try:
            user = auth.setup.create_first_engineer(token, username, password)
        except AccountError as exc:
            return render(request, "setup.html", status_code=422, error=str(exc), username=username)
        auth.throttle.known(user.username, address)  # the first engineer's desk (throttle rule 4)
        audit.append(
            web_actor(user),
            "user create",
            f"user:{user.username}",
            {"role": str(user.role), "first_engineer": True},
        )
        event(log, logging.INFO, "panel set up", user=user.username)
        return _start_session(auth, user, f"Welcome, {user.username}: the panel is set up.")

    @router.get("/login")
    def login_page(
        request: Request, user: Annotated[User | None, Depends(optional_user)]
    ) -> Response:
        if panel_auth(request).setup.needed:
            return redirect("/setup")
        if user is not None:
            return redirect("/")
        return render(request, "login.html", error=None, username="")

    @router.post("/login")
    def login_submit(request: Request, form: Form) -> Response:
        auth = panel_auth(request)
        address = _address(request)
        username = _field(form, "username").strip().lower()
        password = _field(form, "password", 1000)
        verdict, begun = auth.throttle.begin(username, address)
        note_attack(verdict, username, address)
        if not verdict.allowed:
            event(
                log,
                logging.WARNING,
                "login refused: locked",
                user=username,
                address=address,
                rule=str(verdict.rule),
            )
            return render(
                request, "login.html", status_code=429, error=_wait_text(verdict), username=username
            )
        user = auth.users.verify(username, password)
        if user is None:
            after = auth.throttle.check(username, address)
            locked = not after.allowed
            event(
                log, logging.WARNING, "login failed", user=username, address=address, locked=locked
            )
            audit.append(
                f"web:{username or '-'}", "login failed", f"address:{address}", {"locked": locked}
            )
            error = _wait_text(after) if locked else "Wrong user name or password."
            return render(
                request,
                "login.html",
                status_code=429 if locked else 401,
                error=error,
                username=username,
            )
        auth.throttle.succeeded(username, address, begun)
        audit.append(web_actor(user), "login", f"address:{address}", {})
        event(log, logging.INFO, "login", user=user.username, address=address)
        return _start_session(auth, user, f"Logged in as {user.username}.")

    @router.post("/logout")
    def logout(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            panel_auth(request).sessions.end(token)
        if user is not None:
            audit.append(web_actor(user), "logout", f"user:{user.username}", {})
        response = redirect("/login", "Logged out.")
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
        return response

    @router.get("/account")
    def account_page(request: Request, user: Anyone) -> HTMLResponse:
        return _account(request, None)

    @router.post("/account")
    def change_password(request: Request, user: Anyone, form: Form) -> Response:
        auth = panel_auth(request)
        address = _address(request)
        verdict, begun = auth.throttle.begin(user.username, address)
        note_attack(verdict, user.username, address)
        if not verdict.allowed:
            return _account(request, _wait_text(verdict), 429)
        if auth.users.verify(user.username, _field(form, "current", 1000)) is None:
            event(
                log, logging.WARNING, "wrong current password", user=user.username, address=address
            )
            after = auth.throttle.check(user.username, address)
            if not after.allowed:
                return _account(request, _wait_text(after), 429)
            return _account(request, "The current password is wrong.", 422)
        auth.throttle.succeeded(user.username, address, begun)
        new = _field(form, "password", 1000)
        if new != _field(form, "password2", 1000):
            return _account(request, "The two new passwords differ.", 422)
        try:
            auth.users.set_password(user.username, new)
        except AccountError as exc:
            return _account(request, str(exc), 422)
        ended = auth.sessions.end_all(user.username, keep=request.cookies.get(SESSION_COOKIE))
        audit.append(
            web_actor(user),
            "password change",
            f"user:{user.username}",
            {"other_sessions_ended": ended},
        )
        return redirect("/account", "Password changed; your other sessions were ended.")

    @router.get("/users")
    def users_page(request: Request, user: Engineer) -> HTMLResponse:
        return _users(request, None)

    @router.post("/users")
    def add_user(request: Request, user: Engineer, form: Form) -> Response:
        auth = panel_auth(request)
        username = _field(form, "username").strip().lower()
        role = _role(_field(form, "role"))
        if role is None:
            return _users(request, "Choose a role.", 422)
        password = _field(form, "password", 1000)
        if password != _field(form, "password2", 1000):
            return _users(request, "The two passwords differ.", 422)
        try:
            added = auth.users.create(username, password, role)
        except AccountError as exc:
            return _users(request, str(exc), 422)
        audit.append(
            web_actor(user), "user create", f"user:{added.username}", {"role": str(added.role)}
        )
        return redirect("/users", f"User {added.username} added as {added.role}.")

    @router.post("/users/{username}/role")
    def set_role(request: Request, username: str, user: Engineer, form: Form) -> Response:
        auth = panel_auth(request)
        role = _role(_field(form, "role"))
        if role is None:
            return _users(request, "Choose a role.", 422)
        try:
            auth.users.set_role(username, role)
        except AccountError as exc:
            return _users(request, str(exc), 422)
        auth.sessions.end_all(username)  # the new role applies from the next login
        audit.append(web_actor(user), "user role", f"user:{username}", {"role": str(role)})
        return redirect("/users", f"{username} is now {role}.")

    @router.post("/users/{username}/unlock")
    def unlock(request: Request, username: str, user: Engineer) -> Response:
        auth = panel_auth(request)
        if auth.users.get(username) is None:
            return _users(request, f"no user {username}", 404)
        auth.throttle.unlock(username)
        audit.append(web_actor(user), "user unlock", f"user:{username}", {})
        return redirect("/users", f"{username} may log in again.")

    @router.post("/users/{username}/delete")
    def delete_user(request: Request, username: str, user: Engineer) -> Response:
        auth = panel_auth(request)
        if username == user.username:
            return _users(request, "You cannot remove your own account.", 422)
        try:
            auth.users.delete(username)
        except AccountError as exc:
            return _users(request, str(exc), 422)
        audit.append(web_actor(user), "user remove", f"user:{username}", {})
        return redirect("/users", f"User {username} removed.")

    return router


def _role(value: str) -> Role | None:
    try:
        return Role(value)
    except ValueError:
        return None


def _wait_text(verdict: Verdict) -> str:
    """What a refused password check is told: how long to wait (never which rule holds)."""
    seconds = max(1, math.ceil(verdict.wait or 0.0))
    if seconds < 60:
        return f"Too many failed logins: try again in {seconds} s."
    return f"Too many failed logins: try again in {math.ceil(seconds / 60)} min."


def _account(request: Request, error: str | None, status: int = 200) -> HTMLResponse:
    session = current_session(request)
    return render(request, "account.html", status_code=status, error=error, session=session)


def _users(request: Request, error: str | None, status: int = 200) -> HTMLResponse:
    auth = panel_auth(request)
    rows = [(u, auth.throttle.restricted(u.username)) for u in auth.users.list()]
    return render(
        request, "users.html", status_code=status, error=error, rows=rows, roles=list(Role)
    )
