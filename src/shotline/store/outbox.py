"""The webhook outbox: events written in the same transaction as the change they report.

:func:`emit` writes the event and one delivery row per receiver in the caller's
transaction, so a committed state change has its event and a rolled-back one has none.
One delivery per (event, URL): the render's own ``webhook_url`` (signed with the tenant's
secret) and each enabled endpoint of the tenant (signed with its own secret). Sending is
the service's job (:mod:`shotline.service.webhooks`); this module only records.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .db import webhook_deliveries, webhook_endpoints, webhook_events

_d, _e, _ep = webhook_deliveries, webhook_events, webhook_endpoints


def new_event_id() -> str:
    """``msg_`` + 24 URL-safe characters (never a ``.``, which the signed string uses)."""
    return "msg_" + secrets.token_urlsafe(18)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")



def emit(conn: Connection, render: Mapping[str, Any], type: str, data: dict[str, Any], *,
         now: float | None = None) -> str | None:
    """Queue event ``type`` about ``render`` for delivery, in the caller's transaction.

    ``render`` has ``id``, ``tenant_id`` and ``webhook_url``. Returns the event id, or None
    when nobody is to be told: a render without a tenant (made from the CLI or library),
    or a tenant render with no webhook URL and no enabled endpoint.
    """
    tenant_id = render.get("tenant_id")
    if not tenant_id:
        return None
    targets = _targets(conn, tenant_id, render.get("webhook_url"))
    if not targets:
        return None
    t = time.time() if now is None else now
    event_id = new_event_id()
    payload = json.dumps({"type": type, "timestamp": _iso(t), "data": data},
                         separators=(",", ":"))
    conn.execute(_e.insert().values(id=event_id, tenant_id=tenant_id, render_id=render["id"],
                                    type=type, payload=payload, created_at=t))
    conn.execute(_d.insert(), [
        {"event_id": event_id, "endpoint_id": endpoint_id, "url": url, "state": "pending",
         "attempts": 0, "next_attempt_at": t, "created_at": t}
        for endpoint_id, url in targets])
    return event_id


def _targets(conn: Connection, tenant_id: str, own_url: str | None) -> list[tuple[str | None, str]]:
    """(endpoint id or None, URL) for each receiver; a URL listed twice is sent to once."""
    found: dict[str, str | None] = {own_url: None} if own_url else {}
    rows = conn.execute(sa.select(_ep.c.id, _ep.c.url)
                        .where(_ep.c.tenant_id == tenant_id, _ep.c.disabled_at.is_(None))
                        .order_by(_ep.c.created_at, _ep.c.id))
    for row in rows:
        found.setdefault(row.url, row.id)
    return [(endpoint_id, url) for url, endpoint_id in found.items()]
