"""The JSON API (/api/v1): worklist, the room's procedure, reconciliation of held objects.

The routers know nothing of how a caller was identified: who acts comes from an injected
FastAPI dependency returning the actor string written to the audit log. The local Unix-socket
server (gateway.web.localapi) provides one from the peer's credentials ("local:<user>"); the web
panel (issue 5) mounts the same routers behind its own session dependency.

The endpoints drive the same service classes as the CLI, with the same rules (selecting needs
exactly one scheduled step; a binding is refused rather than guessed) and the same audit lines.
Endpoints are plain functions: FastAPI runs them in its worker threads, where blocking on SQLite,
fsync or the RIS is fine. Refusals map to HTTP statuses with a ``detail`` safe to show:
404 not found, 409 not unique or not possible now, 413 body too large, 422 invalid input.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.audit import AuditLog
from gateway.identity import PatientIdentity
from gateway.paging import Page
from gateway.spool.entries import DeliveryState
from gateway.web.deps import User, require_engineer
from gateway.web.pages.dashboard import DashboardView, dashboard_view
from gateway.web.pages.queue import ObjectView, QueueView, object_view, queue_view
from gateway.web.schemas import (
    BindOut,
    BindRequest,
    DiscardOut,
    DiscardRequest,
    Health,
    HeldDetailOut,
    HeldOut,
    ProcedureOut,
    RefreshOut,
    SelectionOut,
    SelectProcedure,
    WorklistItemOut,
    WorklistOut,
    utc,
)
from gateway.web.services import WebServices
from gateway.worklist.cache import WorklistCache
from gateway.worklist.item import WorklistItem
from gateway.worklist.lookup import NoSuchStepError, SeveralStepsError, one_step
from gateway.worklist.reconcile import (
    ItemNotFoundError,
    ObjectNotHeldError,
    ReconcileError,
    Reconciler,
)
from gateway.worklist.refresher import WorklistRefresher
from gateway.worklist.selection import RoomSelection

API_PREFIX = "/api/v1"
OPENAPI_URL = f"{API_PREFIX}/openapi.json"
MAX_BODY_BYTES = 16 * 1024  # the largest valid body is well under 2 KiB
MAX_HELD_LISTED = 1000
NO_WORKLIST = "no [worklist] in the gateway's configuration"

# A FastAPI dependency (it may itself depend on the request) that names who is acting.
ActorDependency = Callable[..., str]


@dataclass(frozen=True)
class ApiServices:
    """What the API drives; the daemon builds these (worklist parts are None without [worklist])."""

    reconciler: Reconciler
    audit: AuditLog
    worklist: WorklistCache | None = None
    refresher: WorklistRefresher | None = None
    selection: RoomSelection | None = None
    selection_expires_minutes: float = 240.0  # as given to RoomSelection, for "expires_at"


def create_api(services: ApiServices, actor_dependency: ActorDependency) -> FastAPI:
    """The whole API as one app: /healthz, /api/v1/... and /api/v1/openapi.json."""
    app = FastAPI(
        title="DICOM edge gateway API",
        version="1",
        openapi_url=OPENAPI_URL,
        docs_url=None,  # the interactive pages load scripts from a CDN; the box is often offline
        redoc_url=None,
    )
    app.include_router(health_router())
    app.include_router(api_router(services, actor_dependency), prefix=API_PREFIX)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    return app


def health_router() -> APIRouter:
    """GET /healthz: no authentication needed, no patient data given."""
    router = APIRouter()

    @router.get("/healthz", tags=["health"])
    def healthz() -> Health:
        """The API answers."""
        return Health()

    return router


def api_router(services: ApiServices, actor_dependency: ActorDependency) -> APIRouter:
    """Every /api/v1 endpoint (mount at API_PREFIX); ``actor_dependency`` names who acts."""
    # Every endpoint, reads included, needs an identified caller: a mounting app that forgot
    # to guard a read still does not serve patient data to nobody.
    router = APIRouter(dependencies=[Depends(actor_dependency)])
    router.include_router(_worklist_routes(services), tags=["worklist"])
    router.include_router(_procedure_routes(services, actor_dependency), tags=["procedure"])
    router.include_router(_held_routes(services, actor_dependency), tags=["held"])
    return router


def _worklist_routes(services: ApiServices) -> APIRouter:
    router = APIRouter()

    @router.get("/worklist")
    def get_worklist() -> WorklistOut:
        """The cached worklist (items not expired, in scheduled order) and the refresh state."""
        cache, refresher = services.worklist, services.refresher
        if cache is None:
            return WorklistOut(configured=False, fetched_at=None, last_error=None, items=[])
        return WorklistOut(
            configured=True,
            fetched_at=utc(cache.fetched_at),
            last_error=None if refresher is None else refresher.last_error,
            items=[WorklistItemOut.of(item) for item in cache.items()],
        )

    @router.post("/worklist/refresh", responses={409: {"description": NO_WORKLIST}})
    def refresh_worklist() -> RefreshOut:
        """Ask the RIS now and wait for the answer; a failure keeps the cache as it was."""
        cache, refresher = services.worklist, services.refresher
        if cache is None or refresher is None:
            raise HTTPException(409, NO_WORKLIST)
        refresher.refresh_now()  # serialised with the refresher's own loop; never raises
        error = refresher.last_error
        return RefreshOut(
            ok=error is None,
            count=refresher.last_count,
            error=error,
            fetched_at=utc(cache.fetched_at),
        )

    return router


def _procedure_routes(services: ApiServices, actor_dependency: ActorDependency) -> APIRouter:
    router = APIRouter()
    lifetime = services.selection_expires_minutes * 60.0

    def configured() -> tuple[WorklistCache, RoomSelection]:
        if services.worklist is None or services.selection is None:
            raise HTTPException(409, NO_WORKLIST)
        return services.worklist, services.selection

    def view() -> ProcedureOut:
        if services.worklist is None or services.selection is None:
            return ProcedureOut(current=None, item=None, expired=None)
        current = services.selection.current()
        if current is None:
            last = services.selection.recorded()
            expired = None if last is None else SelectionOut.of(last, lifetime)
            return ProcedureOut(current=None, item=None, expired=expired)
        item = services.worklist.get(current.item_key)
        return ProcedureOut(
            current=SelectionOut.of(current, lifetime),
            item=None if item is None else WorklistItemOut.of(item),
            expired=None,
        )

    @router.get("/procedure")
    def get_procedure() -> ProcedureOut:
        """The procedure selected for the room, or null with the last expired one."""
        return view()

    @router.put(
        "/procedure",
        responses={
            404: {"description": "No scheduled step with this accession number (and step)."},
            409: {"description": "Several steps match: name one with step_id."},
        },
    )
    def select_procedure(
        body: SelectProcedure, actor: Annotated[str, Depends(actor_dependency)]
    ) -> ProcedureOut:
        """Bind files dropped from now on to this scheduled step (exactly one must match)."""
        cache, selection = configured()
        item = _one_step(cache, body.accession_number, body.step_id)
        chosen = selection.select(item, actor)
        # The same audit line as `dicom-gateway procedure select`.
        services.audit.append(
            chosen.by,
            "procedure select",
            f"accession {item.accession_number}",
            {"item_key": item.key, "step": item.scheduled_procedure_step_id},
        )
        return view()

    @router.delete("/procedure")
    def clear_procedure(actor: Annotated[str, Depends(actor_dependency)]) -> ProcedureOut:
        """Select nothing: files are bound by file name or sidecar again."""
        _, selection = configured()
        selection.clear(actor)
        services.audit.append(actor, "procedure clear", "room selection", {})
        return view()

    return router


def _one_step(cache: WorklistCache, accession: str, step: str | None) -> WorklistItem:
    """The one scheduled step with this accession number (and step ID): the CLI's rule."""
    try:
        return one_step(cache, accession, step)
    except NoSuchStepError as exc:
        raise HTTPException(404, f"{exc}") from None
    except SeveralStepsError as exc:
        raise HTTPException(409, f"{exc} with step_id") from None


ObjectId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The held object's queue id.")]
_HELD_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"description": "Unknown object, or no longer held; or no such worklist item."},
    409: {"description": "The accession number matches several worklist items."},
    422: {"description": "Invalid request (the detail says what to correct)."},
}


# A list answer cannot grow fields without breaking its clients: the page is in headers.
_PAGE_HEADERS: dict[str, dict[str, object]] = {
    "X-Total-Count": {
        "description": "How many rows the listing has in all (this answer is one page of it).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Next-Offset": {
        "description": "The offset of the next page; absent on the last page.",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Link": {
        "description": 'The next page as RFC 8288 link with rel="next"; absent on the last page.',
        "schema": {"type": "string"},
    },
}


def set_page_headers(response: Response, page: Page, path: str) -> None:
    """Say on a list answer how many rows there are in all, and where the next page starts."""
    response.headers["X-Total-Count"] = str(page.total)
    nxt = page.next_offset
    if nxt is not None:
        response.headers["X-Next-Offset"] = str(nxt)
        response.headers["Link"] = f'<{path}?limit={page.limit}&offset={nxt}>; rel="next"'


def _held_routes(services: ApiServices, actor_dependency: ActorDependency) -> APIRouter:
    router = APIRouter()
    reconciler = services.reconciler

    @router.get("/held", responses={200: {"headers": _PAGE_HEADERS}})
    def list_held(
        response: Response,
        limit: Annotated[int, Query(ge=1, le=MAX_HELD_LISTED)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**62, description="Rows to skip first.")] = 0,
    ) -> list[HeldOut]:
        """Held objects, oldest first, each with why it is held and its sources: one page
        (headers X-Total-Count, X-Next-Offset and Link say how many there are, and where next)."""
        rows = [HeldOut.of(info) for info in reconciler.list_held(limit, offset)]
        page = Page(offset, limit, len(rows), reconciler.count_held())
        set_page_headers(response, page, f"{API_PREFIX}/held")
        return rows

    @router.get("/held/{object_id}", responses={404: _HELD_ERRORS[404]})
    def show_held(object_id: ObjectId) -> HeldDetailOut:
        """One held object: its header's patient and study values, and candidate items."""
        try:
            held = reconciler.show(object_id)
        except ReconcileError as exc:
            raise _refusal(exc) from None
        candidates = [WorklistItemOut.of(item) for item in held.candidates]
        return HeldDetailOut.with_view(held.info, held.attributes, candidates)

    @router.post("/held/{object_id}/bind", responses=_HELD_ERRORS)
    def bind_held(
        object_id: ObjectId, body: BindRequest, actor: Annotated[str, Depends(actor_dependency)]
    ) -> BindOut:
        """Bind to a worklist item (by key or accession number) or to typed demographics."""
        try:
            if body.patient_id is not None:
                identity = PatientIdentity(
                    patient_id=body.patient_id,
                    patient_name=body.patient_name,
                    accession_number=body.accession_number,
                    birth_date=body.birth_date,
                    sex=body.sex,
                )
                result = reconciler.bind_to_demographics(object_id, identity, actor)
            elif body.item_key is not None:
                result = reconciler.bind_to_item(object_id, body.item_key, actor)
            else:
                assert body.accession_number is not None  # BindRequest admits one form
                result = reconciler.bind_to_accession(object_id, body.accession_number, actor)
        except ItemNotFoundError as exc:
            raise _refusal(exc, ambiguous=_is_ambiguous(services, body)) from None
        except ReconcileError as exc:
            raise _refusal(exc) from None
        return BindOut(
            object_id=result.object_id,
            sop_instance_uid=result.sop_instance_uid,
            study_instance_uid=result.study_instance_uid,
            deliveries=result.deliveries,
        )

    @router.post(
        "/held/{object_id}/discard", responses={404: _HELD_ERRORS[404], 422: _HELD_ERRORS[422]}
    )
    def discard_held(
        object_id: ObjectId, body: DiscardRequest, actor: Annotated[str, Depends(actor_dependency)]
    ) -> DiscardOut:
        """Take a held object out of the queue with a reason; its file is kept on the box."""
        try:
            kept = reconciler.discard(object_id, body.reason, actor)
        except ReconcileError as exc:
            raise _refusal(exc) from None
        return DiscardOut(object_id=object_id, kept_at=str(kept))

    return router


QueuedId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The object's queue id.")]


class QueueRetry(BaseModel):
    """Which failed deliveries to send again: one destination's, or every one."""

    model_config = ConfigDict(extra="forbid")
    destination: str | None = Field(None, max_length=64, description="Only this destination.")


class QueuePurge(BaseModel):
    """Purging is for good: the caller must say so."""

    model_config = ConfigDict(extra="forbid")
    confirm: bool = Field(description="Must be true.")


class QueueCount(BaseModel):
    """How many deliveries a retry or purge changed."""

    deliveries: int


_QUEUE_404: dict[int | str, dict[str, object]] = {404: {"description": "no such object"}}


def panel_api_router(services: WebServices, actor_dependency: ActorDependency) -> APIRouter:
    """The panel's own /api/v1 endpoints (mount at API_PREFIX): the dashboard's status and the
    queue. Reads need any session; retry and purge need the engineer role, as on the screens."""
    router = APIRouter(dependencies=[Depends(actor_dependency)])
    spool = services.spool

    @router.get("/status", tags=["status"])
    def get_status() -> DashboardView:
        """What the dashboard shows: sources, queues per destination, held, worklist, disk."""
        return dashboard_view(services)

    @router.get("/queue", tags=["queue"])
    def get_queue(
        destination: Annotated[
            str | None, Query(max_length=64, description="Page through this one's failures.")
        ] = None,
        offset: Annotated[
            int, Query(ge=0, le=2**62, description="Failures of the destination to skip.")
        ] = 0,
    ) -> QueueView:
        """Each destination's queue with its failed deliveries (status and reason), a page of
        each (failures_total, failures_next_offset: ask again with destination and offset)."""
        return queue_view(services, destination, offset)

    @router.get("/queue/{object_id}", tags=["queue"], responses=_QUEUE_404)
    def get_queued(object_id: QueuedId) -> ObjectView:
        """One queued object and each of its deliveries."""
        info = spool.show(object_id)
        if info is None:
            raise HTTPException(404, f"no object {object_id} in the queue")
        return object_view(info, services.clock.now())

    @router.post(
        "/queue/retry", tags=["queue"], responses={404: {"description": "no such destination"}}
    )
    def retry_queue(
        body: QueueRetry,
        actor: Annotated[str, Depends(actor_dependency)],
        user: Annotated[User, Depends(require_engineer)],
    ) -> QueueCount:
        """Failed deliveries (of one destination, when named) go back to pending now."""
        if body.destination is not None and body.destination not in spool.stats():
            raise HTTPException(404, f"no destination {body.destination!r} in the queue")
        count = spool.retry(None, body.destination)
        target = f"destination:{body.destination}" if body.destination else "queue"
        services.audit.append(actor, "queue retry", target, {"deliveries": count})
        return QueueCount(deliveries=count)

    @router.post("/queue/purge", tags=["queue"], responses={422: {"description": "not confirmed"}})
    def purge_queue(
        body: QueuePurge,
        actor: Annotated[str, Depends(actor_dependency)],
        user: Annotated[User, Depends(require_engineer)],
    ) -> QueueCount:
        """Remove every failed delivery for good (an object left with none is deleted)."""
        _confirmed(body)
        count = spool.purge(None, states=(DeliveryState.FAILED,))
        services.audit.append(actor, "queue purge", "queue", {"deliveries": count})
        return QueueCount(deliveries=count)

    @router.post("/queue/{object_id}/retry", tags=["queue"], responses=_QUEUE_404)
    def retry_queued(
        object_id: QueuedId,
        actor: Annotated[str, Depends(actor_dependency)],
        user: Annotated[User, Depends(require_engineer)],
    ) -> QueueCount:
        """This object's failed and waiting deliveries are sent again now."""
        if spool.show(object_id) is None:
            raise HTTPException(404, f"no object {object_id} in the queue")
        count = spool.retry([object_id])
        services.audit.append(actor, "queue retry", f"object:{object_id}", {"deliveries": count})
        return QueueCount(deliveries=count)

    @router.post(
        "/queue/{object_id}/purge",
        tags=["queue"],
        responses={**_QUEUE_404, 422: {"description": "not confirmed"}},
    )
    def purge_queued(
        object_id: QueuedId,
        body: QueuePurge,
        actor: Annotated[str, Depends(actor_dependency)],
        user: Annotated[User, Depends(require_engineer)],
    ) -> QueueCount:
        """Remove this object's failed deliveries for good."""
        _confirmed(body)
        if spool.show(object_id) is None:
            raise HTTPException(404, f"no object {object_id} in the queue")
        count = spool.purge([object_id], states=(DeliveryState.FAILED,))
        services.audit.append(actor, "queue purge", f"object:{object_id}", {"deliveries": count})
        return QueueCount(deliveries=count)

    return router


def _confirmed(body: QueuePurge) -> None:
    if not body.confirm:
        raise HTTPException(422, "set confirm to true: a purge cannot be undone")


def _is_ambiguous(services: ApiServices, body: BindRequest) -> bool:
    # The reconciler refused to bind by accession number; only the status code depends on
    # whether nothing or several items matched (the reconciler's message says which).
    if services.worklist is None or body.item_key is not None or body.accession_number is None:
        return False
    return len(services.worklist.find(accession_number=body.accession_number)) > 1


def _refusal(exc: ReconcileError, *, ambiguous: bool = False) -> HTTPException:
    """The HTTP answer to a refused action; its message is safe to show (no patient data)."""
    if isinstance(exc, ItemNotFoundError):
        return HTTPException(409 if ambiguous else 404, str(exc))
    if isinstance(exc, ObjectNotHeldError):
        return HTTPException(404, str(exc))
    # InvalidIdentityError, or a discard reason that is empty, too long or has control codes.
    return HTTPException(422, str(exc))


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        # Read the whole (small) body here, so a chunked body is bounded as well.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # the app waits for a disconnect after the body
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send: Send, max_bytes: int) -> None:
    body = b'{"detail":"request body larger than %d bytes"}' % max_bytes
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
