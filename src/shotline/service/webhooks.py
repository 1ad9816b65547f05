"""Outbound webhooks (Standard Webhooks v1): signing and delivery with retries.

Events are written by the outbox (:mod:`shotline.store.outbox`) in the transaction of the
state change they report; this module sends them. Invariants:

* Every attempt of a delivery sends the stored payload bytes unchanged, with
  ``webhook-id`` = the event id (receivers dedupe on it) and ``webhook-timestamp`` = the
  time of that attempt, signed over both.
* A delivery is sent only by the worker that claimed it: the claim moves
  ``next_attempt_at`` to a lease expiry under the write lock, and the outcome is written
  only while that lease value is still in place. Sends are at least once, never two at once.
* Each attempt goes through the SSRF guard (:mod:`shotline.service.ssrf`) to the address it
  checked, never follows redirects, reads at most :data:`MAX_RESPONSE_BYTES` of the answer
  and gives up after ``settings.webhook_timeout`` seconds in all.
* Retries follow :data:`SCHEDULE` (a ``Retry-After`` may only push them later); after the
  last, the delivery is ``failed`` until someone replays it. ``410 Gone`` disables an
  endpoint for good.
* Secrets are never logged, never put in an error and never listed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from standardwebhooks.webhooks import Webhook

from ..errors import NotFoundError, UnsafeURLError, UserError
from ..settings import Settings
from ..store.db import (
    Database,
    lock,
    tenants,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
)
from . import ssrf

log = logging.getLogger(__name__)

# Seconds after the previous attempt; the first is sent at once. About 75 h in all.
SCHEDULE: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
MAX_RESPONSE_BYTES = 4096
LEASE_GRACE = 30.0
MAX_ENDPOINTS = 10
USER_AGENT = "shotline-webhooks/1 (Standard Webhooks v1)"

_d, _e, _ep = webhook_deliveries, webhook_events, webhook_endpoints


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, payload: str) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one attempt."""
    when = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return Webhook(secret).sign(msg_id, when, payload)


# --- delivery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    """A delivery this worker has claimed, with all it needs to send one attempt."""

    id: int
    event_id: str
    endpoint_id: str | None
    url: str
    payload: str
    secret: str | None
    attempts: int
    lease: float


@dataclass(frozen=True)
class _Outcome:
    attempted_at: float
    seconds: float
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


async def deliver_due(db: Database, settings: Settings, *, now: Callable[[], float] = time.time,
                      transport: httpx.AsyncBaseTransport | None = None,
                      resolver: ssrf.Resolver | None = None, limit: int = 20) -> int:
    """Send one attempt of each due delivery (up to ``limit``); return how many were tried.

    ``transport`` replaces the network under the SSRF guard and ``resolver`` the system
    resolver (both for tests).
    """
    t = now()
    claimed = await asyncio.to_thread(_claim, db, t, t + settings.webhook_timeout + LEASE_GRACE,
                                      limit)
    if not claimed:
        return 0
    guard = ssrf.PinnedTransport(allow_private=settings.allow_private_webhooks,
                                 resolver=resolver or ssrf.resolve, inner=transport)
    # trust_env off: no proxy, .netrc or other ambient credentials may join a request.
    async with httpx.AsyncClient(transport=guard, follow_redirects=False, trust_env=False,
                                 timeout=settings.webhook_timeout) as client:
        await asyncio.gather(*(_deliver(db, client, due, now, settings.webhook_timeout)
                               for due in claimed))
    return len(claimed)


def _claim(db: Database, t: float, lease: float, limit: int) -> list[_Due]:
    secret = sa.case((_d.c.endpoint_id.is_(None), tenants.c.webhook_secret),
                     else_=_ep.c.secret).label("secret")
    query = (sa.select(_d.c.id, _d.c.event_id, _d.c.endpoint_id, _d.c.url, _d.c.attempts,
                       _e.c.payload, secret)
             .join(_e, _e.c.id == _d.c.event_id)
             .outerjoin(tenants, tenants.c.id == _e.c.tenant_id)
             .outerjoin(_ep, _ep.c.id == _d.c.endpoint_id)
             .where(_d.c.state == "pending", _d.c.next_attempt_at <= t)
             .order_by(_d.c.next_attempt_at, _d.c.id).limit(limit)
             .with_for_update(of=_d, skip_locked=True))
    with db.write() as conn:
        rows = conn.execute(query).all()
        if rows:
            conn.execute(_d.update().where(_d.c.id.in_([r.id for r in rows]))
                         .values(next_attempt_at=lease))
    return [_Due(id=r.id, event_id=r.event_id, endpoint_id=r.endpoint_id, url=r.url,
                 payload=r.payload, secret=r.secret, attempts=r.attempts, lease=lease)
            for r in rows]


async def _deliver(db: Database, client: httpx.AsyncClient, due: _Due, now: Callable[[], float],
                   timeout: float) -> None:
    try:
        outcome = await _attempt(client, due, now, timeout)
    except Exception as exc:  # a bug here must not cost the other deliveries their record
        log.exception("webhook delivery %s to %s crashed", due.id, due.url)
        outcome = _Outcome(attempted_at=now(), seconds=0.0,
                           error=f"internal error: {type(exc).__name__}")
    if not outcome.ok:
        log.info("webhook %s to %s failed: %s", due.event_id, due.url, outcome.error)
    await asyncio.to_thread(_record, db, due, outcome, now())


async def _attempt(client: httpx.AsyncClient, due: _Due, now: Callable[[], float],
                   timeout: float) -> _Outcome:
    started, clock = now(), time.perf_counter()

    def done(**values: Any) -> _Outcome:
        return _Outcome(attempted_at=started, seconds=time.perf_counter() - clock, **values)

    if not due.secret:
        return done(error="no signing secret: the tenant or endpoint no longer exists")
    stamp = int(started)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "accept-encoding": "identity",  # the capped read below takes raw bytes, not inflated
        "webhook-id": due.event_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(due.secret, due.event_id, stamp, due.payload),
    }
    try:
        async with asyncio.timeout(timeout), client.stream(
                "POST", due.url, content=due.payload.encode(), headers=headers) as response:
            body = await _read_capped(response)
    except UnsafeURLError as exc:
        return done(error=str(exc))
    except (TimeoutError, httpx.TimeoutException):
        return done(error=f"no answer within {timeout:g} s")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        return done(error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    return done(status=response.status_code, error=_judge(response, body),
                retry_after=_retry_after(response, started))


async def _read_capped(response: httpx.Response) -> bytes:
    """At most MAX_RESPONSE_BYTES of the body: a receiver cannot make us read more.

    Raw bytes, so a compressed answer cannot inflate past the cap inside one chunk.
    """
    if response.is_stream_consumed:  # a transport that answered with a body already in memory
        return response.content[:MAX_RESPONSE_BYTES]
    body = b""
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) >= MAX_RESPONSE_BYTES:
            break
    return body[:MAX_RESPONSE_BYTES]


def _judge(response: httpx.Response, body: bytes) -> str | None:
    """None for success, else what the receiver's answer means, for ``last_error``."""
    code = response.status_code
    if 200 <= code < 300:
        return None
    text = body.decode("utf-8", "replace").strip()
    if 300 <= code < 400:
        where = response.headers.get("location", "(no Location)")
        return (f"HTTP {code} redirect to {where}: redirects are not followed; register the "
                "final URL")
    if code == 410:
        return "HTTP 410 Gone: the receiver asked for no more deliveries"
    return f"HTTP {code}" + (f": {text}" if text else "")


def _retry_after(response: httpx.Response, t: float) -> float | None:
    """Seconds the receiver asked us to wait (429 and 503 only), capped at a day."""
    value = response.headers.get("retry-after")
    if response.status_code not in (429, 503) or not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - t
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), max(SCHEDULE))


def _record(db: Database, due: _Due, outcome: _Outcome, t: float) -> None:
    """Write the attempt, and the delivery's next state if our claim still holds."""
    attempts = due.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_status": outcome.status,
                              "last_error": outcome.error}
    if outcome.ok:
        values.update(state="delivered", delivered_at=t)
    elif outcome.gone or attempts >= len(SCHEDULE):
        values["state"] = "failed"
    else:
        values["next_attempt_at"] = t + max(SCHEDULE[attempts], outcome.retry_after or 0.0)
    with db.write() as conn:
        conn.execute(webhook_attempts.insert().values(
            delivery_id=due.id, attempted_at=outcome.attempted_at, status_code=outcome.status,
            error=outcome.error, seconds=outcome.seconds))
        held = conn.execute(_d.update().where(_d.c.id == due.id, _d.c.state == "pending",
                                              _d.c.next_attempt_at == due.lease)
                            .values(**values)).rowcount
        if held and outcome.gone and due.endpoint_id:
            _disable(conn, due.endpoint_id, t, "the receiver answered 410 Gone")


def _disable(conn: Connection, endpoint_id: str, t: float, reason: str) -> None:
    conn.execute(_ep.update().where(_ep.c.id == endpoint_id, _ep.c.disabled_at.is_(None))
                 .values(disabled_at=t, disabled_reason=reason))
    _fail_pending(conn, endpoint_id, f"endpoint disabled: {reason}")


def _fail_pending(conn: Connection, endpoint_id: str, why: str) -> None:
    conn.execute(_d.update().where(_d.c.endpoint_id == endpoint_id, _d.c.state == "pending")
                 .values(state="failed", last_error=why))


# --- endpoints, the delivery log and replay ---------------------------------------------------


def add_endpoint(db: Database, tenant_id: str, url: str, settings: Settings, *,
                 resolver: ssrf.Resolver | None = None) -> tuple[str, str]:
    """Register ``url`` for all of a tenant's events; return (endpoint id, its secret).

    The URL passes the SSRF guard first (nothing is written if it is refused). The secret
    is shown to the caller this once and never listed again.
    """
    ssrf.check_url_sync(url, allow_private=settings.allow_private_webhooks,
                        resolver=resolver or ssrf.resolve)
    endpoint_id, secret = "we_" + secrets.token_hex(8), new_secret()
    with db.write() as conn:
        lock(conn, f"endpoints:{tenant_id}")  # the count below stays true until we insert
        if conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is None:
            raise NotFoundError(f"no tenant {tenant_id!r}: `shotline keys create` makes one")
        enabled = conn.execute(sa.select(sa.func.count()).select_from(_ep).where(
            _ep.c.tenant_id == tenant_id, _ep.c.disabled_at.is_(None))).scalar_one()
        if enabled >= MAX_ENDPOINTS:
            raise UserError(f"tenant {tenant_id} already has {enabled} webhook endpoints, the "
                            f"most allowed: remove one first")
        conn.execute(_ep.insert().values(id=endpoint_id, tenant_id=tenant_id, url=url,
                                         secret=secret, created_at=time.time()))
    return endpoint_id, secret


def list_endpoints(db: Database, tenant_id: str) -> list[dict[str, Any]]:
    """A tenant's endpoints, oldest first, without their secrets."""
    with db.read() as conn:
        rows = conn.execute(sa.select(_ep.c.id, _ep.c.url, _ep.c.created_at, _ep.c.disabled_at,
                                      _ep.c.disabled_reason)
                            .where(_ep.c.tenant_id == tenant_id)
                            .order_by(_ep.c.created_at, _ep.c.id))
        return [dict(r._mapping) for r in rows]


def remove_endpoint(db: Database, tenant_id: str, endpoint_id: str) -> bool:
    """Delete an endpoint (its pending deliveries fail); False if the tenant has no such one."""
    with db.write() as conn:
        gone = conn.execute(_ep.delete().where(_ep.c.id == endpoint_id,
                                               _ep.c.tenant_id == tenant_id)).rowcount
        if gone:
            _fail_pending(conn, endpoint_id, "endpoint removed")
        return bool(gone)


def deliveries(db: Database, tenant_id: str, render_id: str | None = None, *,
               limit: int = 100) -> list[dict[str, Any]]:
    """A tenant's deliveries, newest first, each with its ``attempt_log`` (oldest first)."""
    query = (sa.select(_d.c.id, _d.c.event_id, _e.c.type, _e.c.render_id, _d.c.endpoint_id,
                       _d.c.url, _d.c.state, _d.c.attempts, _d.c.last_status, _d.c.last_error,
                       _d.c.next_attempt_at, _d.c.delivered_at, _d.c.created_at)
             .join(_e, _e.c.id == _d.c.event_id).where(_e.c.tenant_id == tenant_id)
             .order_by(_d.c.created_at.desc(), _d.c.id.desc()).limit(limit))
    if render_id is not None:
        query = query.where(_e.c.render_id == render_id)
    a = webhook_attempts
    with db.read() as conn:
        found = [dict(r._mapping) for r in conn.execute(query)]
        log_rows = conn.execute(
            sa.select(a.c.delivery_id, a.c.attempted_at, a.c.status_code, a.c.error, a.c.seconds)
            .where(a.c.delivery_id.in_([d["id"] for d in found]))
            .order_by(a.c.attempted_at, a.c.id)).all() if found else []
    by_delivery: dict[int, list[dict[str, Any]]] = {}
    for row in log_rows:
        entry = dict(row._mapping)
        by_delivery.setdefault(entry.pop("delivery_id"), []).append(entry)
    for d in found:
        if d["state"] != "pending":
            d["next_attempt_at"] = None
        d["attempt_log"] = by_delivery.get(d["id"], [])
    return found


def replay(db: Database, tenant_id: str, delivery_id: int, *, now: float | None = None) -> bool:
    """Send a failed delivery again now; False unless it is the tenant's, failed, and its
    endpoint (if any) still exists and is enabled."""
    query = (sa.select(_d.c.id, _d.c.endpoint_id, _ep.c.id.label("endpoint"), _ep.c.disabled_at)
             .join(_e, _e.c.id == _d.c.event_id)
             .outerjoin(_ep, _ep.c.id == _d.c.endpoint_id)
             .where(_d.c.id == delivery_id, _e.c.tenant_id == tenant_id, _d.c.state == "failed"))
    with db.write() as conn:
        row = conn.execute(query).first()
        if row is None or (row.endpoint_id and (row.endpoint is None or row.disabled_at)):
            return False
        conn.execute(_d.update().where(_d.c.id == delivery_id).values(
            state="pending", next_attempt_at=time.time() if now is None else now))
        return True
