"""The render state machine, its events and webhooks outbox, and the worker leases."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from shotline.store import lifecycle
from shotline.store.db import Database, render_events, renders, webhook_deliveries, webhook_events


@pytest.fixture
def db(any_db: Database) -> Database:
    """The same state machine on the embedded database and on Postgres."""
    return any_db


def queue(db: Database, *, tenant: str | None = "t_1", webhook: str | None = None,
          auto: bool = False) -> str:
    with db.write() as conn:
        return lifecycle.enqueue(
            conn, tenant=tenant, key="sha256:" + "0" * 64, model="local/preview", brief="b",
            plan={"shots": []}, shot_keys=["sha256:" + "1" * 64], estimate=Decimal(0),
            options={}, webhook_url=webhook, auto_approve=auto, max_usd=None)


def status(db: Database, render_id: str) -> str:
    with db.read() as conn:
        return str(conn.execute(sa.select(renders.c.status)
                                .where(renders.c.id == render_id)).scalar_one())


def test_only_allowed_moves_happen_and_each_is_logged(db: Database) -> None:
    rid = queue(db)
    with db.write() as conn:
        assert not lifecycle.transition(conn, rid, "published")  # queued cannot publish
        assert lifecycle.transition(conn, rid, "rendering")
        assert lifecycle.transition(conn, rid, "cancelled")
        assert not lifecycle.transition(conn, rid, "rendering")  # cancelled is final
    with db.read() as conn:
        logged = [r.data["status"] for r in conn.execute(
            sa.select(render_events).where(render_events.c.type == "status")
            .order_by(render_events.c.id))]
    assert logged == ["queued", "rendering", "cancelled"] and status(db, rid) == "cancelled"


def test_webhook_event_commits_with_the_state_or_not_at_all(db: Database) -> None:
    rid = queue(db, webhook="https://example.com/hook")
    with pytest.raises(RuntimeError), db.write() as conn:
        lifecycle.transition(conn, rid, "failed", error="boom")
        raise RuntimeError("crash before commit")
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one() == 0
    assert status(db, rid) == "queued"
    with db.write() as conn:
        lifecycle.transition(conn, rid, "failed", error="boom")
    with db.read() as conn:
        event = conn.execute(sa.select(webhook_events)).one()
        delivery = conn.execute(sa.select(webhook_deliveries)).one()
    assert event.type == "render.failed" and '"error":"boom"' in event.payload
    assert delivery.url == "https://example.com/hook" and delivery.state == "pending"


def test_auto_approve_publishes_instead_of_waiting(db: Database) -> None:
    rid = queue(db, auto=True)
    with db.write() as conn:
        for step in ("rendering", "stitching", "awaiting_review"):
            assert lifecycle.transition(conn, rid, step)
    assert status(db, rid) == "published"


def test_lapsed_lease_moves_to_another_worker_and_fences_the_first(db: Database) -> None:
    rid = queue(db)
    a, b = "otherhost:1:aaaa", "otherhost:2:bbbb"  # another host: only the clock can free it
    with db.write() as conn:
        assert lifecycle.claim_next(conn, a, lease=60, now=1000) == rid
        assert lifecycle.claim_next(conn, b, lease=60, now=1030) is None
        assert lifecycle.renew(conn, rid, a, lease=60, now=1050) == "queued"
        assert lifecycle.claim_next(conn, b, lease=60, now=1100) is None
        assert lifecycle.claim_next(conn, b, lease=60, now=1111) == rid  # a went quiet
        assert lifecycle.renew(conn, rid, a, lease=60, now=1112) is None
        # a's late work is refused; b's goes through.
        assert not lifecycle.transition(conn, rid, "rendering", owner=a)
        assert lifecycle.transition(conn, rid, "rendering", owner=b)


def test_a_dead_local_owner_frees_the_render_at_once(db: Database) -> None:
    rid = queue(db)
    import socket

    dead = f"{socket.gethostname()}:999999:dead"
    with db.write() as conn:
        assert lifecycle.claim_next(conn, dead, lease=600, now=1000) == rid
        assert lifecycle.claim_next(conn, "otherhost:2:bbbb", lease=60, now=1001) == rid


def test_cli_renders_are_not_claimed_by_workers(db: Database) -> None:
    with db.write() as conn:
        conn.execute(renders.insert().values(
            id="r_cli", key="k", status="rendering", model="local/preview", brief="b", plan={},
            estimate_usd=0, cost_usd=0, created_at=1, updated_at=1))
        assert lifecycle.claim_next(conn, "otherhost:1:x", lease=60) is None
