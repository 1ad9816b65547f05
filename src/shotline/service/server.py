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
  A token's file never changes (outputs and stills are named by content), so media are
  ``immutable`` to caches; a render's view changes, so it carries an ETag to revalidate
  with (``If-None-Match`` answers ``304``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
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
from ..store.db import Database, media, renders
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


def _unauthorized() -> HTTPException:
    return HTTPException(401, "a valid API key is needed: send Authorization: Bearer "
                         "<key> (create one with `shotline keys create --name NAME`)",
                         headers={"WWW-Authenticate": "Bearer"})


def tenant_of(request: Request) -> str:
    """The tenant of the request's API key, or 401."""
    key = _bearer(request)
    tenant = tenants.authenticate(request.app.state.service.db, key) if key else None
    if tenant is None:
        raise _unauthorized()
    return tenant



Tenant = Annotated[str, Depends(tenant_of)]


def owned(request: Request, render_id: str, tenant: Tenant) -> str:
    """The render id, if the render is this tenant's; 404 as if absent otherwise."""
    with request.app.state.service.db.read() as conn:
        row = conn.execute(sa.select(renders.c.tenant_id).where(renders.c.id == render_id)).first()
    if row is None or row.tenant_id != tenant:
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
            query = (sa.select(renders.c.id, renders.c.created_at)
                     .where(renders.c.tenant_id == tenant)
                     .order_by(renders.c.created_at.desc(), renders.c.id.desc()).limit(limit + 1))
            if cursor:
                after = conn.execute(sa.select(renders.c.created_at).where(
                    renders.c.id == cursor, renders.c.tenant_id == tenant)).first()
                if after is None:
                    raise NotFoundError(f"no render {cursor!r} to continue after")
                query = query.where(sa.or_(
                    renders.c.created_at < after.created_at,
                    sa.and_(renders.c.created_at == after.created_at, renders.c.id < cursor)))
            ids = [r.id for r in conn.execute(query)]
            page = [lifecycle.describe(conn, i, base) for i in ids[:limit]]
        return {"data": page, "next_cursor": ids[limit - 1] if len(ids) > limit else None}

    @app.get("/v1/renders/{render_id}", tags=["renders"])
    def get_render(request: Request, render_id: str,
                   if_none_match: Annotated[str | None, Header()] = None) -> Response:
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
    def media_file(request: Request, token: str) -> FileResponse:
        """A stored video or still; supports Range requests, ETag and If-None-Match (304)."""
        return _media(service, token, request)

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
        with db.read() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"status": "ok", "database": "ok", "version": __version__,
                "worker": bool(service.worker and service.worker.alive())}

    page, page_headers = review_page()

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
        status = conn.execute(sa.select(renders.c.status)
                              .where(renders.c.id == render_id)).scalar_one()
    return rows, str(status)


def _tags(header: str) -> set[str]:
    """The entity tags an If-None-Match header lists (weak ones compare as strong: RFC 9110)."""
    return {t.strip().removeprefix("W/") for t in header.split(",")}


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


def _media(service: Service, token: str, request: Request) -> FileResponse:
    missing = NotFoundError("no such file")
    key = _bearer(request)
    row = None
    with service.db.read() as conn:  # the key and the file in one transaction
        who = tenants.lookup(conn, key) if key else None
        if who is not None and TOKEN.fullmatch(token):
            row = conn.execute(sa.select(media).where(media.c.token == token)).first()
    tenant = tenants.settle_use(service.db, who)
    if tenant is None:
        raise _unauthorized()
    if row is None or row.tenant_id != tenant:
        raise missing
    path = Path(row.path).resolve()
    if not path.is_relative_to(service.store.root.resolve()) or not path.is_file():
        raise missing  # only files of our own store are ever served
    # private: the file is only ever served to its tenant's key.
    return MediaResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                         filename=f"{row.render_id}-{row.kind}{path.suffix}",
                         content_disposition_type="inline",
                         headers={"Cache-Control": "private, max-age=31536000, immutable"})


def review_page() -> tuple[str, dict[str, str]]:
    """The packaged review page, and headers that only let its own inline script run.

    The page holds an API key, so the policy pins its one script by hash: text from the API
    that ever slipped into the DOM as markup still could not run.
    """
    page = resources.files("shotline").joinpath("data/review.html").read_text("utf-8")
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    if script is None:
        raise RuntimeError("the packaged data/review.html has no inline <script>")
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    policy = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
              "connect-src 'self'; img-src 'self'; media-src 'self'; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'")
    return page, {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer",
                  "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        out[k] = lifecycle.money(v) if isinstance(v, Decimal) else v
    return out


def serve(settings: Settings, host: str, port: int) -> None:
    """``shotline serve``: the API and a worker in one process."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
