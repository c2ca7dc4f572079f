"""FastAPI dependencies for the panel: who is asking, what they may do, and CSRF.

Use in a page module::

    @router.get("/things")
    def things(request: Request, user: Annotated[User, Depends(require_engineer)]) -> HTMLResponse:
        ...

    @router.post("/things")
    def add_thing(
        request: Request,
        user: Annotated[User, Depends(require_engineer)],
        form: Annotated[FormData, Depends(read_form)],
    ) -> Response:
        ...  # audit as web_actor(user), then: return redirect("/things", "Added.")

The app checks CSRF on every POST/PUT/PATCH/DELETE of every page and API route (the page
routers are included with ``verify_csrf``), so a page module need not ask for it. Forms carry
the token as the hidden field ``csrf_token`` (``{{ csrf_field() }}`` in a template); API calls
carry it in the ``X-CSRF-Token`` header. Without a session, pages redirect to /login and the
API answers 401; the wrong role gets 403.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

from fastapi import Depends, HTTPException, Request
from starlette.datastructures import FormData, UploadFile

from gateway.web.auth import PanelAuth
from gateway.web.auth.sessions import Session
from gateway.web.auth.users import Role, User

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LoginRequired",
    "User",
    "api_actor",
    "current_user",
    "optional_user",
    "read_form",
    "require_engineer",
    "require_technologist",
    "verify_csrf",
    "web_actor",
]

# __Host-: the browser sends the cookie only over HTTPS, to this host, for every path.
SESSION_COOKIE = "__Host-gw_session"
ANON_CSRF_COOKIE = "__Host-gw_csrf"  # the CSRF token of forms shown before login (login, setup)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPE = "application/x-www-form-urlencoded"
API_PATH = "/api/"
MAX_FORM_FIELDS = 500
_UNSET = object()


class LoginRequired(Exception):  # noqa: N818 - names the recovery, not an error
    """A page needs a session and there is none: the app redirects the browser to /login."""


def panel_auth(request: Request) -> PanelAuth:
    """The app's account and session stores (``app.state.auth``, set by create_web_app)."""
    auth = request.app.state.auth
    assert isinstance(auth, PanelAuth)
    return auth


def optional_user(request: Request) -> User | None:
    """The signed-in user, or None; also leaves the session on ``request.state.session``."""
    cached = getattr(request.state, "user", _UNSET)
    if cached is not _UNSET:
        assert cached is None or isinstance(cached, User)
        return cached
    auth = panel_auth(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    session = auth.sessions.lookup(token) if token else None
    user = auth.users.get(session.username) if session is not None else None
    request.state.session = session if user is not None else None
    request.state.user = user
    return user


def current_session(request: Request) -> Session | None:
    """The live session of this request (after optional_user ran), or None."""
    session = getattr(request.state, "session", None)
    return session if isinstance(session, Session) else None


def current_user(user: Annotated[User | None, Depends(optional_user)], request: Request) -> User:
    """The signed-in user; without one, 401 for the API and a redirect to /login for pages."""
    if user is None:
        if request.url.path.startswith(API_PATH):
            raise HTTPException(401, "not logged in (or the session expired)")
        raise LoginRequired
    return user


def require_engineer(user: Annotated[User, Depends(current_user)]) -> User:
    """The signed-in user if an engineer, else 403."""
    if user.role is not Role.ENGINEER:
        raise HTTPException(403, "this needs the engineer role")
    return user


def require_technologist(user: Annotated[User, Depends(current_user)]) -> User:
    """The signed-in user if a technologist or an engineer (engineers may do everything)."""
    if user.role not in (Role.TECHNOLOGIST, Role.ENGINEER):
        raise HTTPException(403, "this needs the technologist role")
    return user


def web_actor(user: User) -> str:
    """The audit log's actor for a change made from a panel page."""
    return f"web:{user.username}"


async def read_form(request: Request) -> FormData:
    """The urlencoded form of a POST (parsed once per request); 415 for other bodies."""
    cached = getattr(request.state, "form", None)
    if isinstance(cached, FormData):
        return cached
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if body and media != FORM_TYPE:
        raise HTTPException(415, f"forms are posted as {FORM_TYPE}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the form is not UTF-8") from None
    try:
        pairs: list[tuple[str, str | UploadFile]] = list(
            parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        )
    except ValueError:
        raise HTTPException(400, f"more than {MAX_FORM_FIELDS} form fields") from None
    form = FormData(pairs)
    request.state.form = form
    return form


def anonymous_csrf(request: Request) -> str:
    """The CSRF token for forms shown without a session (from its cookie, or a new one)."""
    token = getattr(request.state, "anon_csrf", None) or request.cookies.get(ANON_CSRF_COOKIE)
    if not token or len(token) > 128:
        token = secrets.token_urlsafe(32)
        request.state.set_anon_csrf = token  # templating sets the cookie on the response
    request.state.anon_csrf = token
    return str(token)


def expected_csrf(request: Request) -> str | None:
    """The token a state-changing request must carry: the session's, else the login form's."""
    session = current_session(request)
    if session is not None:
        return session.csrf_token
    return request.cookies.get(ANON_CSRF_COOKIE) or None


async def verify_csrf(
    request: Request, _user: Annotated[User | None, Depends(optional_user)]
) -> None:
    """403 unless a state-changing request carries this session's CSRF token (and no foreign
    Origin); safe methods pass."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "request from another site refused")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == FORM_TYPE:
            field = (await read_form(request)).get(CSRF_FIELD)
            sent = field if isinstance(field, str) else None
    expected = expected_csrf(request)
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")


def api_actor(
    user: Annotated[User, Depends(current_user)], _csrf: Annotated[None, Depends(verify_csrf)]
) -> str:
    """The JSON API's actor for a panel session: ``api:<user>`` (CSRF checked on changes)."""
    return f"api:{user.username}"
