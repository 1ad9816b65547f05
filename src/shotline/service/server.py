"""The HTTP service: async renders with progress, review actions, files, money, webhooks.

``create_app(settings)`` builds the FastAPI app; ``shotline serve`` runs it under uvicorn
with a worker in the same process. Invariants:

* Every ``/v1`` call needs ``Authorization: Bearer <key>``; what a key reaches is its
  tenant's, and anything else answers 404 exactly as if it did not exist. GETs may carry
  the key in the ``shotline_key`` cookie instead, so a browser's ``<video>`` can seek.
* Errors are ``{"error": {"code": ..., "message": ...}}``; the message says what was
  wrong and what is allowed. Secrets never appear in answers or logs.
* ``POST /v1/renders`` honours ``Idempotency-Key``: the key is claimed in its own
  transaction (so a concurrent retry sees 409), and the answer is saved in the same
  transaction that queues the render (so a crash leaves neither). Requests that fail
  change nothing and are not saved: they are safe to retry with the same key.
* Media are served by random tokens from the store, never by a path from the request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    StreamingResponse,
)
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError
from sqlalchemy.engine import Connection
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..api import open_store
from ..core.capabilities import ModelTable, table_for
from ..errors import NotFoundError, ShotlineError
from ..settings import Settings
from ..store import ledger, lifecycle
from ..store.blobs import Blobs, LocalBlobs
from ..store.db import Database
from . import actions, idempotency, metrics, tenants, webhooks
from .worker import Background

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


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body",)) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


class Service:
    """What the routes share: settings, the database and store, and the worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db, self.store = open_store(settings)
        self.worker: Background | None = None

    def table(self) -> ModelTable:
        """The model table, read again only when the overrides file changes (see
        :func:`~shotline.capabilities.table_for`, shared with the adapters)."""
        return table_for(self.settings.overrides_path)


def create_app(settings: Settings | None = None, *, with_worker: bool = True) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings)
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
                  description="Briefs in, reviewed multi-shot videos out, without runaway cost.")
    app.state.service = service
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _errors(app)
    _routes(app, service)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ShotlineError)
    async def shotline_error(_: Request, exc: ShotlineError) -> JSONResponse:
        retry = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry)} if isinstance(retry, int | float) else None
        return error(exc.http_status, _code(exc), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "invalid_request", _validation_message(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}
        return error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                     dict(exc.headers or {}))


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if request.method == "GET":  # a <video> element cannot send headers, but sends cookies
        return request.cookies.get("shotline_key")
    return None


def tenant_of(request: Request) -> str:
    """The tenant of the request's API key, or 401."""
    key = _bearer(request)
    tenant = tenants.authenticate(request.app.state.service.db, key) if key else None
    if tenant is None:
        raise HTTPException(401, "a valid API key is needed: send Authorization: Bearer "
                            "<key> (create one with `shotline keys create --name NAME`)",
                            headers={"WWW-Authenticate": "Bearer"})
    return tenant


Tenant = Annotated[str, Depends(tenant_of)]


def owned(request: Request, render_id: str, tenant: Tenant) -> str:
    """The render id, if the render is this tenant's; 404 as if absent otherwise."""
    with request.app.state.service.db.read() as conn:
        exists, owner = lifecycle.tenant_of(conn, render_id)
    if not exists or owner != tenant:
        raise NotFoundError(f"no render {render_id!r}")
    return render_id


Owned = Annotated[str, Depends(owned)]


def _routes(app: FastAPI, service: Service) -> None:  # noqa: C901 - one place lists every route
    db, settings = service.db, service.settings
    base = settings.public_url

    @app.post("/v1/renders", status_code=202, tags=["renders"])
    async def create_render(request: Request, tenant: Tenant,
                            idempotency_key: Annotated[str | None, Header()] = None) -> Response:
        """Queue a render; answers at once with its id, status, estimate and links."""
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
            view, created = await actions.submit(db, settings, table, tenant, req, also=save)
        except BaseException:
            await once.forget()
            raise
        return JSONResponse(view, status_code=202 if created else 200)

    @app.get("/v1/renders", tags=["renders"])
    def list_renders(tenant: Tenant, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                     cursor: str | None = None) -> dict[str, Any]:
        """The tenant's renders, newest first; pass ``next_cursor`` back for the next page."""
        with db.read() as conn:
            ids = lifecycle.page(conn, tenant, limit, cursor)
            if ids is None:
                raise NotFoundError(f"no render {cursor!r} to continue after")
            page = [lifecycle.describe(conn, i, base) for i in ids[:limit]]
        return {"data": page, "next_cursor": ids[limit - 1] if len(ids) > limit else None}

    @app.get("/v1/renders/{render_id}", tags=["renders"])
    def get_render(render_id: Owned) -> dict[str, Any]:
        """Status, each shot's state and progress, costs, and file URLs once made."""
        with db.read() as conn:
            return lifecycle.describe(conn, render_id, base)

    @app.get("/v1/renders/{render_id}/events", response_class=EventSourceResponse,
             tags=["renders"])
    async def render_events(request: Request, render_id: Owned,
                            last_event_id: Annotated[str | None, Header()] = None,
                            ) -> AsyncIterator[ServerSentEvent]:
        """Every state change and progress step, as Server-Sent Events; resumable."""
        after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
        while True:
            rows, status = await asyncio.to_thread(_events, db, render_id, after)
            for row in rows:
                after = row["id"]
                yield ServerSentEvent(id=str(row["id"]), event=row["type"], data=row["data"])
            if not rows and status in SETTLED or await request.is_disconnected():
                return
            await asyncio.sleep(0.25)

    @app.post("/v1/renders/{render_id}/approve", tags=["review"])
    def approve(render_id: Owned, tenant: Tenant) -> dict[str, Any]:
        """Publish a render that awaits review."""
        return actions.approve(db, tenant, render_id, base_url=base)

    @app.post("/v1/renders/{render_id}/reject", tags=["review"])
    def reject(render_id: Owned, tenant: Tenant, body: actions.RejectRequest) -> dict[str, Any]:
        """Reject a render that awaits review, with a reason."""
        return actions.reject(db, tenant, render_id, body.reason, base_url=base)

    @app.post("/v1/renders/{render_id}/reroll", status_code=202, tags=["review"])
    async def reroll(render_id: Owned, tenant: Tenant, body: actions.RerollRequest,
                     idempotency_key: Annotated[str | None, Header()] = None) -> Response:
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

    @app.post("/v1/renders/{render_id}/cancel", tags=["review"])
    async def cancel(render_id: Owned, tenant: Tenant) -> dict[str, Any]:
        """Stop a render and cancel the vendor jobs that can be cancelled."""
        table = await asyncio.to_thread(service.table)
        return await actions.cancel(db, settings, table, tenant, render_id)

    @app.get("/v1/media/{token}", tags=["files"])
    def media_file(token: str, tenant: Tenant, request: Request) -> Response:
        """A stored video or still; supports Range requests (or, with
        SHOTLINE_MEDIA_REDIRECT, redirects to a presigned URL of the object store)."""
        return _media(service, token, tenant, request.headers.get("range"))

    @app.get("/v1/ledger", tags=["money"])
    def ledger_rows(tenant: Tenant, render_id: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Every billed provider attempt of the tenant's renders."""
        rows = ledger.rows(db, render_id, tenant=tenant, limit=limit)
        return {"data": [_jsonable(r) for r in rows]}

    @app.get("/v1/spend", tags=["money"])
    def spend(tenant: Tenant, by: Annotated[str, Query(pattern="^(day|provider|model)$")] = "day",
              ) -> dict[str, Any]:
        """Spend and cache savings, by day, provider or model."""
        return {"data": [_jsonable(r) for r in ledger.spend(db, by, tenant=tenant)]}

    @app.get("/v1/webhooks/secret", tags=["webhooks"])
    def webhook_secret(tenant: Tenant) -> dict[str, str]:
        """The secret per-render webhooks are signed with (Standard Webhooks, whsec_...)."""
        return {"webhook_secret": tenants.webhook_secret(db, tenant)}

    @app.get("/v1/webhooks/deliveries", tags=["webhooks"])
    def deliveries(tenant: Tenant, render_id: str | None = None) -> dict[str, Any]:
        """Webhook deliveries and each of their attempts."""
        return {"data": [_jsonable(d) for d in webhooks.deliveries(db, tenant, render_id)]}

    @app.post("/v1/webhooks/deliveries/{delivery_id}/replay", tags=["webhooks"])
    def replay(delivery_id: int, tenant: Tenant) -> dict[str, bool]:
        """Send a delivery that gave up once more."""
        if not webhooks.replay(db, tenant, delivery_id):
            raise NotFoundError(f"no failed delivery {delivery_id}")
        return {"replayed": True}

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        """Liveness and the database's reachability (no key needed)."""
        db.ping()
        return {"status": "ok", "database": "ok", "version": __version__,
                "queue": settings.queue,
                "worker": bool(service.worker and service.worker.alive())}

    page, page_headers = review_page(_media_origin(service))

    @app.get("/review", include_in_schema=False)
    def review() -> HTMLResponse:
        """The human review page; it asks for a key itself, so loading it needs none."""
        return HTMLResponse(page, headers=page_headers)

    registry = metrics.registry(db)

    @app.get("/metrics", tags=["operations"])
    def prometheus() -> Response:
        """Prometheus metrics: renders by state, shots, provider calls, cache hits, spend."""
        body, content_type = metrics.render(registry)
        return Response(body, media_type=content_type)


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


def _media(service: Service, token: str, tenant: str, range_header: str | None) -> Response:
    missing = NotFoundError("no such file")
    if not TOKEN.fullmatch(token):
        raise missing
    with service.db.read() as conn:
        row = lifecycle.media_item(conn, token)
    if row is None or row.tenant_id != tenant:
        raise missing
    blobs, settings = service.store.blobs, service.settings
    suffix = Path(row.path).suffix
    filename = f"{row.render_id}-{row.kind}{suffix}"
    kind = MEDIA_TYPES.get(suffix, "application/octet-stream")
    if isinstance(blobs, LocalBlobs):
        path = blobs.path(row.path).resolve()
        if not path.is_relative_to(blobs.root.resolve()) or not path.is_file():
            raise missing  # only files of our own store are ever served
        return FileResponse(path, media_type=kind, filename=filename,
                            content_disposition_type="inline")
    if settings.media_redirect:
        url = blobs.presign(row.path, settings.media_url_seconds, filename)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    return _stream(blobs, row.path, kind, filename, range_header, missing)


def _stream(blobs: Blobs, name: str, kind: str, filename: str, range_header: str | None,
            missing: Exception) -> Response:
    """An object's bytes through the API, whole or one requested range (RFC 9110)."""
    size = blobs.size(name)
    if size is None:
        raise missing
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{filename}"'}
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
