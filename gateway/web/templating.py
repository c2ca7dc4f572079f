"""Server-side pages: one Jinja2 environment per app, autoescaping every .html template.

Autoescape is what keeps patient data as data: a worklist name ``<script>alert(1)</script>``
renders as text. Never mark patient values ``|safe``. Every page gets ``user`` (or None),
``csrf_token`` and ``csrf_field()`` (the hidden form field), ``nav`` (the links this user's role
may follow), ``flash`` (the message left by the previous POST's redirect, or None) and
``clock_banner`` (why the box's clock cannot be trusted yet, or "": gateway.web.netview).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from gateway.web.auth.users import Role, User
from gateway.web.deps import (
    ANON_CSRF_COOKIE,
    CSRF_FIELD,
    anonymous_csrf,
    current_session,
    optional_user,
)
from gateway.web.netview import clock_state

TEMPLATES_DIR = Path(__file__).with_name("templates")
STATIC_DIR = Path(__file__).with_name("static")
FLASH_COOKIE = "__Host-gw_flash"
MAX_FLASH = 300  # characters; a flash is one sentence, never patient data


@dataclass(frozen=True)
class NavLink:
    """One entry of the menu; ``role`` None: every signed-in user sees it."""

    path: str
    label: str
    role: Role | None = None

    def visible_to(self, user: User | None) -> bool:
        """Shown to this user (nobody signed in sees no menu)."""
        if user is None:
            return False
        return self.role is None or self.role is user.role or user.role is Role.ENGINEER


@dataclass(frozen=True)
class NavItem:
    """A menu link as a template shows it."""

    path: str
    label: str
    active: bool


def make_environment(templates_dir: Path = TEMPLATES_DIR) -> Environment:
    """The panel's Jinja2 environment: autoescape on for .html, undefined names are errors."""
    return Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render a page with the common context; call from a route that has ``request``."""
    env: Environment = request.app.state.templates
    user = optional_user(request)
    session = current_session(request)
    token = session.csrf_token if session is not None else anonymous_csrf(request)
    links: tuple[NavLink, ...] = request.app.state.nav
    path = request.url.path
    nav = [
        NavItem(link.path, link.label, path == link.path or path.startswith(link.path + "/"))
        for link in links
        if link.visible_to(user)
    ]
    flash = _take_flash(request)
    html = env.get_template(template).render(
        request=request,
        user=user,
        csrf_token=token,
        csrf_field=lambda: Markup('<input type="hidden" name="{}" value="{}">').format(
            CSRF_FIELD, token
        ),
        nav=nav,
        flash=flash,
        clock_banner=clock_state(request.app.state.services).message,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    new_anon = getattr(request.state, "set_anon_csrf", None)
    if session is None and isinstance(new_anon, str):
        set_cookie(response, ANON_CSRF_COOKIE, new_anon)
    if flash is not None:
        response.delete_cookie(
            FLASH_COOKIE, path="/", secure=True, httponly=True, samesite="strict"
        )
    return response


def redirect(path: str, flash: str | None = None) -> RedirectResponse:
    """POST -> 303 -> GET to ``path`` (a local path), with a one-time message to show there."""
    if not path.startswith("/") or path.startswith("//"):
        path = "/"  # never an open redirect
    response = RedirectResponse(path, status_code=303)
    if flash:
        set_cookie(response, FLASH_COOKIE, quote(flash[:MAX_FLASH]))
    return response


def set_cookie(
    response: HTMLResponse | RedirectResponse, name: str, value: str, max_age: int | None = None
) -> None:
    """A cookie the way the panel sets them all: Secure, HttpOnly, SameSite=Strict, Path=/."""
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="strict"
    )


def _take_flash(request: Request) -> str | None:
    raw = request.cookies.get(FLASH_COOKIE)
    return unquote(raw)[:MAX_FLASH] if raw else None
