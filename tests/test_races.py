"""Every read-then-write that guards money or a claim, raced by processes on both databases.

Each race runs in separate processes (spawned, so each has its own connections, as
workers on several machines would), released together at one instant, on SQLite and on
Postgres. On SQLite the file's write lock serialises them; on Postgres the advisory and row
locks of store/db.py must. Several rounds each: one lucky interleaving must not pass alone.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from shotline.errors import BudgetError
from shotline.store import calls, ledger, lifecycle, outbox
from shotline.store.db import Database, render_events, webhook_deliveries, webhook_endpoints

PROCESSES = 8
_OPEN: dict[str, Database] = {}


def _db(url: str) -> Database:
    """One Database per URL per process: a worker keeps its engine between tasks."""
    if url not in _OPEN:
        _OPEN[url] = Database(url)
    return _OPEN[url]


def _at(start: float) -> None:
    time.sleep(max(0.0, start - time.time()))


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(PROCESSES, mp_context=mp.get_context("spawn")) as executor:
        list(executor.map(time.sleep, [0.0] * PROCESSES))  # start them all before any race
        yield executor


def race(pool: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any, n: int = PROCESSES,
         ) -> list[Any]:
    """``fn(i, start, *args)`` in ``n`` processes at once; their answers, in order."""
    start = time.time() + 0.5
    return list(pool.map(fn, range(n), [start] * n, *[[a] * n for a in args]))


def queued(db: Database, key: str = "sha256:" + "0" * 64, tenant: str | None = "t_1") -> str:
    with db.write() as conn:
        return lifecycle.enqueue(
            conn, tenant=tenant, key=key, model="local/sim", brief="b", plan={"shots": []},
            shot_keys=["sha256:" + "1" * 64], estimate=Decimal(0), options={},
            webhook_url=None, auto_approve=False, max_usd=None)


# --- budget: exactly as many renders as fit ---------------------------------------------


def _reserve(i: int, start: float, url: str, render_id: str) -> str:
    db = _db(url)
    _at(start)
    try:
        with db.write() as conn:
            ledger.reserve(conn, f"{render_id}-{i}", Decimal("1.00"),
                           ledger.Limits(daily=Decimal("3.00"), tenant="t_1",
                                         tenant_daily=Decimal("5.00")))
    except BudgetError as exc:
        return str(exc)
    return "ok"


def test_reservations_never_overshoot_a_cap(pool: ProcessPoolExecutor, db_url: str) -> None:
    db = Database(db_url)
    for round_ in range(5):
        results = race(pool, _reserve, db_url, f"r{round_}")
        assert results.count("ok") == 3, results
        assert all("daily budget" in r for r in results if r != "ok")
        with db.write() as conn:  # settle this round, so the next one starts from zero
            assert ledger.committed(conn, 0) == Decimal(3)
            for i in range(PROCESSES):
                ledger.settle(conn, f"r{round_}-{i}")
    db.close()


# --- the singleflight claim: one leader per shot key -------------------------------------


def _claim(i: int, start: float, url: str, key: str) -> str:
    db = _db(url)
    _at(start)
    with db.write() as conn:
        return calls.claim(conn, key, "local", "sim", f"host:1:{i}", now=time.time()).action


def test_one_leader_per_shot_key(pool: ProcessPoolExecutor, db_url: str) -> None:
    Database(db_url).close()
    for round_ in range(5):
        results = race(pool, _claim, db_url, f"sha256:{round_:064d}", n=4)
        # The others see a live claim by another owner ("host" is not this machine, and
        # the heartbeat is fresh): they wait, none of them submits.
        assert Counter(results) == {"lead": 1, "wait": 3}, results


# --- worker leases and state transitions: one winner each ---------------------------------


def _claim_next(i: int, start: float, url: str) -> str | None:
    db = _db(url)
    _at(start)
    with db.write() as conn:
        return lifecycle.claim_next(conn, f"host:1:{i}", 60.0)


def test_one_worker_gets_a_render(pool: ProcessPoolExecutor, db_url: str) -> None:
    db = Database(db_url)
    for _ in range(3):
        render_id = queued(db, key=f"sha256:{time.time_ns():064d}")
        results = race(pool, _claim_next, db_url)
        assert results.count(render_id) == 1 and results.count(None) == PROCESSES - 1, results
        with db.write() as conn:
            assert lifecycle.transition(conn, render_id, "cancelled")
    db.close()


def _cancel(i: int, start: float, url: str, render_id: str) -> bool:
    db = _db(url)
    _at(start)
    with db.write() as conn:
        return lifecycle.transition(conn, render_id, "cancelled" if i % 2 else "failed",
                                    error="raced")


def test_one_transition_wins_from_one_state(pool: ProcessPoolExecutor, db_url: str) -> None:
    db = Database(db_url)
    for _ in range(3):
        render_id = queued(db, key=f"sha256:{time.time_ns():064d}")
        results = race(pool, _cancel, db_url, render_id)
        assert results.count(True) == 1, results
        with db.read() as conn:
            moves = conn.execute(sa.select(render_events.c.data).where(
                render_events.c.render_id == render_id, render_events.c.type == "status")).all()
        assert len(moves) == 2  # queued, then exactly one of cancelled or failed
    db.close()


def _open(i: int, start: float, url: str, key: str) -> str:
    db = _db(url)
    _at(start)
    with db.write() as conn:
        return lifecycle.open_render(conn, key, "local/sim", "b", {"shots": []}, [key],
                                     Decimal(0))


def test_processes_opening_one_brief_share_one_render(pool: ProcessPoolExecutor,
                                                      db_url: str) -> None:
    Database(db_url).close()
    results = race(pool, _open, db_url, "sha256:" + "7" * 64, n=4)
    assert len(set(results)) == 1, results


# --- webhook deliveries: each claimed by one worker ----------------------------------------


def _deliveries(i: int, start: float, url: str) -> list[int]:
    from shotline.service import webhooks

    db = _db(url)
    _at(start)
    mine: list[int] = []
    while due := webhooks._claim(db, time.time(), time.time() + 60, limit=3):
        mine += [d.id for d in due]
    return mine


def test_each_webhook_delivery_is_claimed_once(pool: ProcessPoolExecutor, db_url: str) -> None:
    db = Database(db_url)
    with db.write() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, webhook_secret, created_at) "
                             "VALUES ('t_1', 'acme', 'whsec_x', 0)"))
        conn.execute(webhook_endpoints.insert(), [
            {"id": f"ep_{n}", "tenant_id": "t_1", "url": f"https://example.com/{n}",
             "secret": "whsec_y", "created_at": 0} for n in range(5)])
        for n in range(8):
            outbox.emit(conn, {"id": f"r_{n}", "tenant_id": "t_1", "webhook_url": None},
                        "render.published", {"n": n}, now=time.time() - 1)
        total = conn.execute(sa.select(sa.func.count()).select_from(webhook_deliveries)).scalar()
    claimed = [d for mine in race(pool, _deliveries, db_url, n=4) for d in mine]
    assert total == 40 and len(claimed) == total and len(set(claimed)) == total
    db.close()
