"""The HTTP service: async renders with progress, review actions, files, money, webhooks.

``create_app(settings)`` builds the FastAPI app; ``shotline serve`` runs it under uvicorn
with a worker in the same process. Invariants:

* Every ``/v1`` call needs ``Authorization: Bearer <key>``; what a key reaches is its
  tenant's, and anything else answers 404 exactly as if it did not exist. GETs may carry
  the key in the ``shotline_key`` cookie instead, so a browser's ``<video>`` can seek.
* Errors are ``{"error": {"code": ..., "message": ...}}`` at every status, this app's own
  and the framework's (400, 405, 413, 416, 422, 500 alike); the message says what was
  wrong and what is allowed. Secrets never appear in answers or logs. Each route declares
  every status it can answer with (``/openapi.json``; schemathesis checks it in CI).
* ``POST /v1/renders`` honours ``Idempotency-Key``: the key is claimed in its own
  transaction (so a concurrent retry sees 409), and the answer is saved in the same
  transaction that queues the render (so a crash leaves neither). Requests that fail
  change nothing and are not saved: they are safe to retry with the same key.
* Media are served by random tokens from the store, never by a path from the request.
  A token's file never changes (outputs and stills are named by content), so media are
  ``immutable`` to caches; a render's view changes, so it carries an ETag to revalidate
  with (``If-None-Match`` answers ``304``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from importlib import resources
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    StreamingResponse,
)
from fastapi.security import HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError
from sqlalchemy.engine import Connection
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..api import open_store
from ..core import inputs
from ..core.capabilities import ModelTable, table_for
from ..errors import InvalidRequest, NotFoundError, ShotlineError, UserError
from ..settings import Settings
from ..store import ledger, lifecycle
from ..store.blobs import Blobs, LocalBlobs
from ..store.db import Database
from . import actions, idempotency, metrics, schemas, ssrf, tenants, webhooks
from .schemas import errors
from .worker import Background

log = logging.getLogger(__name__)

SETTLED = ("awaiting_review", "published", "rejected", "failed", "cancelled")
TOKEN = re.compile(r"m_[A-Za-z0-9_-]{40,50}")
MEDIA_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}


def _code(exc: Exception) -> str:
    """``UnsafeURLError`` -> ``unsafe_url``: the error's class, as a stable machine code."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", type(exc).__name__)
    return name.lower().removesuffix("_error") or "error"


class BodyTooLarge(ShotlineError):
    http_status = 413


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413: by Content-Length before reading, and
    by counting what arrives (a chunked body, or a Content-Length that lies).

    Starlette's own limiter answers in plain text; this one answers in the API's format.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def message(self) -> str:
        return f"the request body is over the limit of {self.limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            response = error(413, "body_too_large", self.message())
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.message())
            return message

        await self.app(scope, counted, send)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
          ) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


class BadRange(UserError):
    """A Range header that is not ``bytes=FIRST-LAST[, ...]``."""

    http_status = 400


class RangeNotSatisfiable(UserError):
    """A Range that asks for bytes past the end of the file."""

    http_status = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"the Range asks for bytes past the end of the file, which has {size} "
                         "bytes (they are numbered from 0)")
        self.headers = {"Content-Range": f"bytes */{size}"}


def _position(digits: str) -> int:
    # A position of more digits than any file has bytes is just "past the end"; int() of
    # thousands of digits would be refused (and slow).
    return int(digits) if len(digits) <= 18 else 10**18


def check_range(header: str | None, size: int) -> None:
    """Refuse a Range the file server could not honour, in the API's error shape (Starlette
    answers those in plain text): BadRange (400) or RangeNotSatisfiable (416)."""
    if header is None:
        return
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise BadRange(f"Range {inputs.shown(header)} is not understood: use bytes=FIRST-LAST, "
                       "e.g. bytes=0-1023 (or bytes=-500 for the last 500 bytes)")
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > FileResponse.max_ranges:
        return  # the whole file is sent, as for no Range at all
    for part in parts:
        m = re.fullmatch(r"([0-9]*)\s*-\s*([0-9]*)", part)
        if m is None or not (m[1] or m[2]):
            raise BadRange(f"Range {inputs.shown(header)}: {inputs.shown(part)} is not "
                           "FIRST-LAST, FIRST- or -SUFFIX (whole numbers of bytes)")
        if m[1] and m[2] and _position(m[2]) < _position(m[1]):
            raise BadRange(f"Range {inputs.shown(header)}: {part} ends before it starts")
        start = _position(m[1]) if m[1] else max(size - _position(m[2]), 0)
        if start >= size:
            raise RangeNotSatisfiable(size)


class Service:
    """What the routes share: settings, the database and store, and the worker."""

    def __init__(self, settings: Settings, resolver: ssrf.Resolver | None = None) -> None:
        self.settings = settings
        self.db, self.store = open_store(settings)
        self.worker: Background | None = None
        self.resolver = resolver  # the DNS resolver webhook URLs are checked with

    def table(self) -> ModelTable:
        """The model table, read again only when the overrides file changes (see
        :func:`~shotline.capabilities.table_for`, shared with the adapters)."""
        return table_for(self.settings.overrides_path)


def create_app(settings: Settings | None = None, *, with_worker: bool = True,
               resolver: ssrf.Resolver | None = None) -> FastAPI:
    """The API; ``resolver`` replaces the system's DNS for webhook URLs (tests use a fake)."""
    settings = settings or Settings()
    service = Service(settings, resolver)
    if settings.queue == "celery":  # workers are Celery's: this process only enqueues
        from .tasks import configure

        configure(settings)
        with_worker = False

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if with_worker:
            service.worker = Background(settings)
            await asyncio.to_thread(service.worker.start)
        try:
            yield
        finally:
            if service.worker is not None:
                await asyncio.to_thread(service.worker.stop)
            service.db.close()

    app = FastAPI(title="shotline", version=__version__, lifespan=lifespan,
                  dependencies=[Depends(known_query)],
                  description="Briefs in, reviewed multi-shot videos out, without runaway cost. "
                  "Every error, at every status, is {\"error\": {\"code\", \"message\"}}.")
    app.state.service = service
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _errors(app)
    _routes(app, service)
    return app


HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found",
              405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ShotlineError)
    async def shotline_error(_: Request, exc: ShotlineError) -> JSONResponse:
        retry = getattr(exc, "retry_after", None)
        headers = dict(getattr(exc, "headers", None) or {})
        if isinstance(retry, int | float):
            headers["Retry-After"] = str(retry)
        return error(exc.http_status, _code(exc), str(exc), headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "invalid_request", inputs.explain(list(exc.errors()), "api"))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"),
                     str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback for the operator; the client learns nothing of it.
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error(500, "internal", "an internal error; it was logged for the operator, and "
                     "this request changed nothing")


def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take: a misspelt ``?limt=5`` silently
    ignored would answer a question nobody asked."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    known = _query_names(route.dependant)
    if unknown := sorted(set(request.query_params) - known):
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidRequest(f"unknown query parameter {inputs.shown(unknown[0])}: this path "
                             f"takes {allowed}")


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route's function and its dependencies declare."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "GET":  # a <video> element cannot send headers, but sends cookies
        return request.cookies.get("shotline_key")
    return None


def _unauthorized() -> HTTPException:
    return HTTPException(401, "a valid API key is needed: send Authorization: Bearer "
                         "<key> (create one with `shotline keys create --name NAME`)",
                         headers={"WWW-Authenticate": "Bearer"})


# Declares the scheme in /openapi.json; the key is read by tenant_of (a GET may send it as
# the shotline_key cookie instead, for <video> elements).
bearer = HTTPBearer(auto_error=False, description="An API key: `shotline keys create`.")
Bearer = Annotated[Any, Depends(bearer)]


def tenant_of(request: Request, _: Bearer = None) -> str:
    """The tenant of the request's API key, or 401."""
    key = _bearer(request)
    tenant = tenants.authenticate(request.app.state.service.db, key) if key else None
    if tenant is None:
        raise _unauthorized()
    return tenant



Tenant = Annotated[str, Depends(tenant_of)]




RenderId = Annotated[str, Path(max_length=64, description="A render id (r_...).")]
RENDER_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/RenderRequest"}}}}}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the ETag sent in If-None-Match is still current."}}
MEDIA: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file (video/mp4 or image/jpeg); Range requests welcome.",
          "content": {"video/mp4": {}, "image/jpeg": {}}},
    307: {"description": "With SHOTLINE_MEDIA_REDIRECT: the file at a presigned URL of the "
                         "object store."},
    206: {"description": "The part of the file the Range asked for.",
          "content": {"video/mp4": {}, "image/jpeg": {}, "multipart/byteranges": {}}}}


def owned(request: Request, render_id: RenderId, tenant: Tenant) -> str:
    """The render id, if the render is this tenant's; 404 as if absent otherwise."""
    with request.app.state.service.db.read() as conn:
        exists, owner = lifecycle.tenant_of(conn, render_id)
    if not exists or owner != tenant:
        raise NotFoundError(f"no render {render_id!r}")
    return render_id


Owned = Annotated[str, Depends(owned)]


def last_event(last_event_id: Annotated[str | None, Header(
        pattern=r"^[0-9]{1,10}$",
        description="Resume after this event id (EventSource sends it back).")] = None) -> int:
    """The event id a stream resumes after; checked before the stream starts (an error
    raised once it streams could only break the connection)."""
    after = int(last_event_id or 0)
    if after > inputs.MAX_ROW_ID:
        raise InvalidRequest(f"Last-Event-ID {after} is past any event id (at most "
                             f"{inputs.MAX_ROW_ID}): send an id this stream gave")
    return after


LastEvent = Annotated[int, Depends(last_event)]


def _routes(app: FastAPI, service: Service) -> None:  # noqa: C901 - one place lists every route
    db, settings = service.db, service.settings
    base = settings.public_url

    @app.post("/v1/renders", status_code=202, tags=["renders"], response_model=schemas.RenderView,
              responses={200: {"model": schemas.RenderView, "description": "A finished render "
                               "of the same brief for this tenant: nothing was queued or paid."},
                         **errors(400, 401, 402, 409, 413, 422)},
              openapi_extra=RENDER_BODY)
    async def create_render(
            request: Request, tenant: Tenant,
            idempotency_key: Annotated[str | None, Header(
                max_length=idempotency.MAX_KEY_LENGTH,
                description="Any unique string (a UUID): a retry with the same key gets the "
                "first answer instead of a second render.")] = None) -> Response:
        """Queue a render; answers at once with its id, status, estimate and links."""
        # The body is read raw: its exact bytes are the Idempotency-Key's fingerprint.
        raw = await request.body()
        once = Once(db, tenant, idempotency_key, "/v1/renders", raw)
        if (replay := await once.replay()) is not None:
            return replay
        try:
            try:
                req = actions.RenderRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None

            def save(conn: Connection, view: dict[str, Any]) -> None:
                once.save(conn, 202 if view["status"] == "queued" else 200, view)

            table = await asyncio.to_thread(service.table)
            view, created = await actions.submit(db, settings, table, tenant, req, also=save,
                                                 resolver=service.resolver)
        except BaseException:
            await once.forget()
            raise
        return JSONResponse(view, status_code=202 if created else 200)

    @app.get("/v1/renders", tags=["renders"], response_model=schemas.RenderPage,
             responses=errors(401, 404, 422))
    def list_renders(tenant: Tenant, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                     cursor: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
        """The tenant's renders, newest first; pass ``next_cursor`` back for the next page."""
        with db.read() as conn:
            ids = lifecycle.page(conn, tenant, limit, cursor)
            if ids is None:
                raise NotFoundError(f"no render {cursor!r} to continue after")
            page = [lifecycle.describe(conn, i, base) for i in ids[:limit]]
        return {"data": page, "next_cursor": ids[limit - 1] if len(ids) > limit else None}

    @app.get("/v1/renders/{render_id}", tags=["renders"], response_model=schemas.RenderView,
             responses={**NOT_MODIFIED, **errors(401, 404, 422)})
    def get_render(request: Request, render_id: RenderId,
                   if_none_match: Annotated[str | None, Header(max_length=4096)] = None,
                   _: Bearer = None) -> Response:
        """Status, each shot's state, progress and quality flags, costs, and file URLs once made.

        Carries an ETag: send it back in If-None-Match to get 304 while nothing changed.
        """
        # The hot path of reopening: the key and the render are read in one transaction,
        # in one worker thread, with one query each.
        key = _bearer(request)
        with db.read() as conn:
            who = tenants.lookup(conn, key) if key else None
            found = lifecycle.view(conn, render_id, base) if who else None
        tenant = tenants.settle_use(db, who)
        if tenant is None:
            raise _unauthorized()
        if found is None or found[0] != tenant:
            raise NotFoundError(f"no render {render_id!r}")
        body = json.dumps(found[1], separators=(",", ":")).encode()
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
        if if_none_match is not None and tag in _tags(if_none_match):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/v1/renders/{render_id}/events", response_class=EventSourceResponse,
             tags=["renders"], responses=errors(401, 404, 422))
    async def render_events(request: Request, render_id: Owned, after: LastEvent,
                            ) -> AsyncIterator[ServerSentEvent]:
        """Every state change and progress step, as Server-Sent Events; resumable."""
        while True:
            rows, status = await asyncio.to_thread(_events, db, render_id, after)
            for row in rows:
                after = row["id"]
                yield ServerSentEvent(id=str(row["id"]), event=row["type"], data=row["data"])
            # Rows and status are one snapshot: settled, and less than a full page read,
            # means every event was sent.
            if status in SETTLED and len(rows) < lifecycle.EVENT_PAGE or \
                    await request.is_disconnected():
                return
            await asyncio.sleep(0.25)

    @app.post("/v1/renders/{render_id}/approve", tags=["review"],
              response_model=schemas.RenderView, responses=errors(401, 404, 409, 422))
    def approve(render_id: Owned, tenant: Tenant) -> dict[str, Any]:
        """Publish a render that awaits review."""
        return actions.approve(db, tenant, render_id, base_url=base)

    @app.post("/v1/renders/{render_id}/reject", tags=["review"],
              response_model=schemas.RenderView, responses=errors(400, 401, 404, 409, 413, 422))
    def reject(render_id: Owned, tenant: Tenant, body: actions.RejectRequest) -> dict[str, Any]:
        """Reject a render that awaits review, with a reason."""
        return actions.reject(db, tenant, render_id, body.reason, base_url=base)

    @app.post("/v1/renders/{render_id}/reroll", status_code=202, tags=["review"],
              response_model=schemas.RenderView,
              responses=errors(400, 401, 402, 404, 409, 413, 422))
    async def reroll(render_id: Owned, tenant: Tenant, body: actions.RerollRequest,
                     idempotency_key: Annotated[str | None, Header(
                         max_length=idempotency.MAX_KEY_LENGTH)] = None) -> Response:
        """Render the chosen shots again as new takes (only they are billed) and restitch.

        Send an Idempotency-Key: a retried re-roll must not make (and bill) a third take.
        """
        once = Once(db, tenant, idempotency_key, f"/v1/renders/{render_id}/reroll",
                    body.model_dump_json().encode())
        if (replay := await once.replay()) is not None:
            return replay
        try:
            view = await asyncio.to_thread(
                actions.reroll, db, settings, service.table(), tenant, render_id, body,
                store=service.store, also=lambda conn, v: once.save(conn, 202, v))
        except BaseException:
            await once.forget()
            raise
        return JSONResponse(view, status_code=202)

    @app.post("/v1/renders/{render_id}/shots/{number}/pick", status_code=202, tags=["review"],
              response_model=schemas.RenderView,
              responses=errors(400, 401, 402, 404, 409, 413, 422))
    async def pick(render_id: Owned, tenant: Tenant,
                   number: Annotated[int, Path(ge=1, le=inputs.MAX_SHOTS,
                                               description="The shot's number, from 1.")],
                   body: actions.PickRequest) -> Response:
        """Make the output hold another take of a shot, and restitch it from the stored
        clips: no vendor call, nothing billed. The render awaits review again once stitched;
        picking the take already picked changes nothing."""
        view = await asyncio.to_thread(actions.pick, db, settings, service.table(), tenant,
                                       render_id, number, body, store=service.store)
        return JSONResponse(view, status_code=202)

    @app.post("/v1/renders/{render_id}/cancel", tags=["review"],
              response_model=schemas.RenderView, responses=errors(401, 404, 409, 422))
    async def cancel(render_id: Owned, tenant: Tenant) -> dict[str, Any]:
        """Stop a render and cancel the vendor jobs that can be cancelled."""
        table = await asyncio.to_thread(service.table)
        return await actions.cancel(db, settings, table, tenant, render_id)

    @app.get("/v1/media/{token}", tags=["files"], response_class=Response,
             responses={**MEDIA, **NOT_MODIFIED, **errors(400, 401, 404, 416, 422)})
    def media_file(request: Request, token: Annotated[str, Path(max_length=64)],
                   range: Annotated[str | None, Header(
                       max_length=4096, description="bytes=FIRST-LAST[, ...]")] = None,
                   if_none_match: Annotated[str | None, Header(max_length=4096)] = None,
                   _: Bearer = None) -> Response:
        """A stored video or still; supports Range requests, ETag and If-None-Match (304),
        or with SHOTLINE_MEDIA_REDIRECT a redirect to a presigned URL of the object store."""
        return _media(service, token, request, range)

    @app.get("/v1/ledger", tags=["money"], response_model=schemas.LedgerPage,
             responses=errors(401, 422))
    def ledger_rows(tenant: Tenant, render_id: Annotated[str | None, Query(max_length=64)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Every billed provider attempt of the tenant's renders."""
        rows = ledger.rows(db, render_id, tenant=tenant, limit=limit)
        return {"data": [_jsonable(r) for r in rows]}

    @app.get("/v1/spend", tags=["money"], response_model=schemas.SpendPage,
             responses=errors(401, 422))
    def spend(tenant: Tenant, by: Annotated[str, Query(pattern="^(day|provider|model)$")] = "day",
              ) -> dict[str, Any]:
        """Spend and cache savings, by day, provider or model."""
        return {"data": [_jsonable(r) for r in ledger.spend(db, by, tenant=tenant)]}

    @app.get("/v1/webhooks/secret", tags=["webhooks"], response_model=schemas.WebhookSecret,
             responses=errors(401))
    def webhook_secret(tenant: Tenant) -> dict[str, str]:
        """The secret per-render webhooks are signed with (Standard Webhooks, whsec_...)."""
        return {"webhook_secret": tenants.webhook_secret(db, tenant)}

    @app.get("/v1/webhooks/deliveries", tags=["webhooks"], response_model=schemas.DeliveryPage,
             responses=errors(401, 422))
    def deliveries(tenant: Tenant, render_id: Annotated[str | None, Query(max_length=64)] = None,
                   ) -> dict[str, Any]:
        """Webhook deliveries and each of their attempts."""
        return {"data": [_jsonable(d) for d in webhooks.deliveries(db, tenant, render_id)]}

    @app.post("/v1/webhooks/deliveries/{delivery_id}/replay", tags=["webhooks"],
              response_model=schemas.Replayed, responses=errors(401, 404, 422))
    def replay(delivery_id: Annotated[int, Path(ge=1, le=inputs.MAX_ROW_ID)],
               tenant: Tenant) -> dict[str, bool]:
        """Send a delivery that gave up once more."""
        if not webhooks.replay(db, tenant, delivery_id):
            raise NotFoundError(f"no failed delivery {delivery_id}")
        return {"replayed": True}

    @app.get("/healthz", tags=["operations"], response_model=schemas.Health,
             responses=errors(503))
    def healthz() -> Any:
        """Liveness and the database's reachability (no key needed)."""
        try:
            db.ping()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("health check: the database cannot be reached: %s", type(exc).__name__)
            return error(503, "database_unreachable", "the database cannot be reached")
        return {"status": "ok", "database": "ok", "version": __version__,
                "queue": settings.queue,
                "worker": bool(service.worker and service.worker.alive())}

    page, page_headers = review_page(_media_origin(service))

    @app.get("/review", include_in_schema=False)
    def review() -> HTMLResponse:
        """The human review page; it asks for a key itself, so loading it needs none."""
        return HTMLResponse(page, headers=page_headers)

    registry = metrics.registry(db)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"description": "Prometheus text format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **errors()})
    def prometheus() -> Response:
        """Prometheus metrics: renders by state, shots, provider calls, cache hits, spend."""
        body, content_type = metrics.render(registry)
        return Response(body, media_type=content_type)

    _document(app)


def _document(app: FastAPI) -> None:
    """Add what FastAPI cannot see to the OpenAPI document: the body POST /v1/renders reads
    itself (its raw bytes are the Idempotency-Key's fingerprint), and nothing in the
    framework's own error shape, which this API never answers with."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description,
                              routes=app.routes, tags=app.openapi_tags)
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            body = actions.RenderRequest.model_json_schema(
                ref_template="#/components/schemas/{model}", mode="validation")
            components.update(body.pop("$defs", {}))
            components["RenderRequest"] = body
            for model in (schemas.ErrorBody, schemas.ErrorDetail):
                components[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}")
                components[model.__name__].pop("$defs", None)
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class Once:
    """The Idempotency-Key of one POST, if it has one: claim it, replay an earlier answer,
    save this answer in the work's own transaction, or forget the claim if the work failed.
    """

    def __init__(self, db: Database, tenant: str, key: str | None, path: str, body: bytes) -> None:
        self.db, self.tenant, self.key = db, tenant, key
        self.fingerprint = idempotency.fingerprint("POST", path, body)

    async def replay(self) -> Response | None:
        if self.key is None:
            return None
        answer = await asyncio.to_thread(self._begin, self.key)
        if answer is None:
            return None
        return Response(answer.body, status_code=answer.status_code, media_type="application/json",
                        headers={"Idempotent-Replayed": "true"})

    def _begin(self, key: str) -> idempotency.Replay | None:
        with self.db.write() as conn:
            return idempotency.begin(conn, self.tenant, key, self.fingerprint)

    def save(self, conn: Connection, status: int, view: dict[str, Any]) -> None:
        if self.key is not None:
            idempotency.complete(conn, self.tenant, self.key, status, json.dumps(view))

    async def forget(self) -> None:
        if self.key is not None:
            await asyncio.to_thread(self._abandon, self.key)

    def _abandon(self, key: str) -> None:
        with self.db.write() as conn:
            idempotency.abandon(conn, self.tenant, key)


def _events(db: Database, render_id: str, after: int) -> tuple[list[dict[str, Any]], str]:
    with db.read() as conn:
        rows = lifecycle.events_after(conn, render_id, after)
        status = lifecycle.status_of(conn, render_id)
    return rows, str(status)


def _tags(header: str) -> set[str]:
    """The entity tags an If-None-Match header lists (weak ones compare as strong: RFC 9110)."""
    return {t.strip().removeprefix("W/") for t in header.split(",")}


# A media token's file never changes; private: it is only ever served to its tenant's key.
IMMUTABLE = "private, max-age=31536000, immutable"


class MediaResponse(FileResponse):
    """A stored file: large chunks, immutable caching, and 304 for a matching If-None-Match.

    Under a server that offers the ASGI pathsend extension (Granian, say) the server sends the
    file itself; under uvicorn it goes out in 1 MiB chunks (a poster in one).
    """

    chunk_size = 1 << 20

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = dict(scope.get("headers", [])).get(b"if-none-match")
        if match is not None:
            self.set_stat_headers(os.stat(self.path))
            if self.headers["etag"] in _tags(match.decode("latin-1")):
                headers = {k: v for k, v in self.headers.items()
                           if k in ("etag", "cache-control", "last-modified")}
                return await Response(status_code=304, headers=headers)(scope, receive, send)
        await super().__call__(scope, receive, send)


def _media(service: Service, token: str, request: Request, range_: str | None) -> Response:
    missing = NotFoundError("no such file")
    key = _bearer(request)
    row = None
    with service.db.read() as conn:  # the key and the file in one transaction
        who = tenants.lookup(conn, key) if key else None
        if who is not None and TOKEN.fullmatch(token):
            row = lifecycle.media_item(conn, token)
    tenant = tenants.settle_use(service.db, who)
    if tenant is None:
        raise _unauthorized()
    if row is None or row.tenant_id != tenant:
        raise missing
    blobs, settings = service.store.blobs, service.settings
    suffix = FilePath(row.path).suffix
    filename = f"{row.render_id}-{row.kind}{suffix}"
    kind = MEDIA_TYPES.get(suffix, "application/octet-stream")
    if isinstance(blobs, LocalBlobs):
        path = blobs.path(row.path).resolve()
        if not path.is_relative_to(blobs.root.resolve()) or not path.is_file():
            raise missing  # only files of our own store are ever served
        check_range(range_, path.stat().st_size)
        return MediaResponse(path, media_type=kind, filename=filename,
                             content_disposition_type="inline", headers={"Cache-Control": IMMUTABLE})
    if settings.media_redirect:
        url = blobs.presign(row.path, settings.media_url_seconds, filename)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    size = blobs.size(row.path)
    if size is None:
        raise missing
    check_range(range_, size)
    return _stream(blobs, row.path, kind, filename, range_, request.headers.get("if-none-match"),
                   missing)


def _stream(blobs: Blobs, name: str, kind: str, filename: str, range_header: str | None,
            if_none_match: str | None, missing: Exception) -> Response:
    """An object's bytes through the API, whole or one requested range (RFC 9110).

    Objects are named by their content, so the name's digest is a strong entity tag that
    never goes stale, and the same caching applies as to a local file.
    """
    size = blobs.size(name)
    if size is None:
        raise missing
    tag = f'"{hashlib.sha256(name.encode()).hexdigest()[:32]}"'
    cached = {"ETag": tag, "Cache-Control": IMMUTABLE}
    if if_none_match is not None and tag in _tags(if_none_match):
        return Response(status_code=304, headers=cached)
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{filename}"',
               **cached}
    wanted = _byte_range(range_header, size)
    if isinstance(wanted, str):
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    start, end = wanted or (0, size - 1)
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    body = blobs.read(name, start, end) if size else iter(())
    return StreamingResponse(body, status_code=206 if wanted else 200, media_type=kind,
                             headers=headers)


RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one range a ``Range`` header asks for; None for the whole object (no header,
    several ranges, or one we do not read), or "unsatisfiable"."""
    match = RANGE.fullmatch((header or "").strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:  # the last N bytes
        length = int(match[2])
        return (max(size - length, 0), size - 1) if length and size else "unsatisfiable"
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


def _media_origin(service: Service) -> str:
    """The object store's origin when media requests are redirected there (else "")."""
    if not service.settings.media_redirect:
        return ""
    url = service.store.blobs.presign("origin-probe", 60, "probe")
    if url is None:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def review_page(media_origin: str = "") -> tuple[str, dict[str, str]]:
    """The packaged review page, and headers that only let its own inline script run.

    The page holds an API key, so the policy pins its one script by hash: text from the API
    that ever slipped into the DOM as markup still could not run. ``media_origin`` is where
    media redirects lead (the object store), allowed for videos and images only.
    """
    page = resources.files("shotline").joinpath("data/review.html").read_text("utf-8")
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    if script is None:
        raise RuntimeError("the packaged data/review.html has no inline <script>")
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    store = f" {media_origin}" if media_origin else ""
    policy = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
              f"connect-src 'self'; img-src 'self'{store}; media-src 'self'{store}; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page, {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer",
                  "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        out[k] = lifecycle.money(v) if isinstance(v, Decimal) else v
    return out


def serve(settings: Settings, host: str, port: int) -> None:
    """``shotline serve``: the API, and with the inline queue a worker in the same process."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
