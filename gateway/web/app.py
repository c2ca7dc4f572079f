"""The web panel as one FastAPI app: pages, the JSON API, /healthz, /metrics and static files.

A screen is a module under ``gateway.web.pages`` with ``routes(services) -> APIRouter`` and,
optionally, ``NAV: tuple[NavLink, ...]`` (its menu entries); listing the module in ``PAGES``
is all it takes to serve it. Every page router is included with the CSRF check, so every
POST/PUT/PATCH/DELETE of every screen needs the session's token; each route still asks for its
role (``require_engineer`` / ``require_technologist`` from gateway.web.deps).

The JSON API (gateway.web.api) is mounted under /api/v1 with the session's ``api:<user>`` as the
actor, CSRF on changes; its OpenAPI document is served to signed-in engineers only. Every
response carries the security headers (CSP self only with no inline script, no framing, no
referrer) and, except static files, ``Cache-Control: no-store``: pages and answers may show
patient data, and a shared tablet must not keep them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.web.api import (
    API_PREFIX,
    OPENAPI_URL,
    ApiServices,
    BodyLimit,
    api_router,
    panel_api_router,
)
from gateway.web.api import health_router as health_router
from gateway.web.auth import PanelAuth
from gateway.web.deps import (
    API_PATH,
    LoginRequired,
    User,
    api_actor,
    optional_user,
    require_engineer,
    verify_csrf,
)
from gateway.web.metrics import metrics_router
from gateway.web.services import WebServices
from gateway.web.templating import STATIC_DIR, NavLink, make_environment, render

# One line per screen, in menu order.
PAGES: tuple[str, ...] = (
    "gateway.web.pages.dashboard",
    "gateway.web.pages.worklist",
    "gateway.web.pages.held",
    "gateway.web.pages.quarantine",
    "gateway.web.pages.queue",
    "gateway.web.pages.destinations",
    "gateway.web.pages.ingest",
    "gateway.web.pages.devices",
    "gateway.web.pages.certificates",
    "gateway.web.pages.network",
    "gateway.web.pages.config",
    "gateway.web.pages.support",
    "gateway.web.pages.login",
)

MAX_BODY_BYTES = 256 * 1024  # a configuration file or a certificate chain, pasted or uploaded

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def create_web_app(services: WebServices, auth: PanelAuth) -> FastAPI:
    """The panel: every screen in PAGES, the JSON API, /healthz, /metrics, /static."""
    app = FastAPI(
        title="DICOM edge gateway panel",
        version="1",
        openapi_url=None,  # served below, to engineers only
        docs_url=None,  # the interactive docs load scripts from a CDN; the box is often offline
        redoc_url=None,
    )
    app.state.services = services
    app.state.auth = auth
    app.state.templates = make_environment()
    nav: list[NavLink] = []

    app.include_router(health_router())
    app.include_router(_openapi_router(app))
    app.include_router(metrics_router(services))
    app.include_router(api_router(api_services(services), api_actor), prefix=API_PREFIX)
    app.include_router(panel_api_router(services, api_actor), prefix=API_PREFIX)
    for name in PAGES:
        module = importlib.import_module(name)
        routes: Callable[[WebServices], APIRouter] = module.routes
        app.include_router(
            routes(services), dependencies=[Depends(verify_csrf)], include_in_schema=False
        )
        nav.extend(getattr(module, "NAV", ()))
    app.state.nav = tuple(nav)
    if not any(getattr(route, "path", None) == "/" for route in app.routes):
        app.include_router(_home_router(), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(SecurityHeaders)
    return app


def api_services(services: WebServices) -> ApiServices:
    """The JSON API's view of the running parts."""
    wl = services.config.worklist
    return ApiServices(
        reconciler=services.reconciler,
        audit=services.audit,
        worklist=services.worklist,
        refresher=services.refresher,
        selection=services.selection,
        selection_expires_minutes=wl.selection_expires_minutes if wl else 240.0,
    )


def _home_router() -> APIRouter:
    """/ until a dashboard screen serves it: the user's own account page."""
    router = APIRouter()

    @router.get("/")
    def home(request: Request, user: Annotated[object, Depends(optional_user)]) -> RedirectResponse:
        return RedirectResponse("/account" if user else "/login", status_code=303)

    return router


def _openapi_router(app: FastAPI) -> APIRouter:
    """GET /api/v1/openapi.json for a signed-in engineer (401 without a session, 403 for a
    technologist): the document maps every endpoint and field, a guide for an attacker too."""
    router = APIRouter()

    @router.get(OPENAPI_URL, include_in_schema=False)
    def openapi(user: Annotated[User, Depends(require_engineer)]) -> JSONResponse:
        return JSONResponse(app.openapi())

    return router


async def _to_login(request: Request, exc: Exception) -> Response:
    return RedirectResponse("/login", status_code=303)


async def _http_error(request: Request, exc: Exception) -> Response:
    """JSON for the API; a page with the message for a browser."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(API_PATH) or request.url.path in ("/metrics", "/healthz"):
        return await http_exception_handler(request, exc)
    if exc.status_code == 401:
        return JSONResponse({"detail": exc.detail}, status_code=401)
    return render(
        request,
        "error.html",
        status_code=exc.status_code,
        message=str(exc.detail),
        status=exc.status_code,
    )


class SecurityHeaders:
    """ASGI middleware adding the security headers, and no-store outside /static."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"cache-control", b"server")
                    or (static and k.lower() == b"cache-control")
                ]
                headers.extend(SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
