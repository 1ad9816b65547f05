from __future__ import annotations

import multiprocessing as mp
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from shotline.errors import BudgetError
from shotline.store import ledger
from shotline.store.db import Database, renders, reservations


def charge(job: str, amount: str = "1.00", render: str = "r1") -> ledger.Charge:
    return ledger.Charge(render, "sha256:k", "local", "local/sim", job, 4, False,
                         Decimal("0.25"), Decimal(amount))


def test_one_row_per_provider_job(tmp_path: Path) -> None:
    db = Database.for_home(tmp_path)
    with db.write() as conn:
        assert ledger.record(conn, charge("job-1")) is True
        assert ledger.record(conn, charge("job-1")) is False
        assert ledger.record(conn, charge("job-2")) is True
    assert [r["provider_job_id"] for r in ledger.rows(db)] == ["job-1", "job-2"]


def test_per_render_cap_refuses_and_writes_nothing(tmp_path: Path) -> None:
    db = Database.for_home(tmp_path)
    with pytest.raises(BudgetError, match=r"estimate is \$3.00, over the per-render cap of \$2.00"):
        with db.write() as conn:
            ledger.reserve(conn, "r1", Decimal(3), ledger.Limits(per_render=Decimal(2)))
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(reservations)).scalar() == 0


def test_daily_cap_counts_ledger_and_open_reservations(tmp_path: Path) -> None:
    db = Database.for_home(tmp_path)
    limits = ledger.Limits(daily=Decimal(5))
    with db.write() as conn:
        ledger.record(conn, charge("j1", "2.00", render="old"))
        ledger.reserve(conn, "r2", Decimal(2), limits)
    with pytest.raises(BudgetError, match=r"only \$1.00 of the daily budget of \$5.00 is left"):
        with db.write() as conn:
            ledger.reserve(conn, "r3", Decimal(2), limits)
    with db.write() as conn:  # once r2 settles having spent only $0.50, room comes back
        ledger.record(conn, charge("j2", "0.50", render="r2"))
        ledger.settle(conn, "r2")
        ledger.reserve(conn, "r3", Decimal("2.50"), limits)


def _race(home: str, render_id: str, start: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    db = Database.for_home(Path(home))
    while time.time() < start:
        time.sleep(0.001)
    try:
        with db.write() as conn:
            ledger.reserve(conn, render_id, Decimal("1.00"), ledger.Limits(daily=Decimal("3.00")))
        out.put(("ok", render_id))
    except BudgetError as exc:
        out.put(("refused", str(exc)))


def test_concurrent_reservations_never_overshoot(tmp_path: Path) -> None:
    Database.for_home(tmp_path)  # migrate once up front, as a real install would
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = time.time() + 2.0
    procs = [ctx.Process(target=_race, args=(str(tmp_path), f"r{i}", start, queue))
             for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = [queue.get(timeout=5) for _ in procs]
    assert sum(1 for kind, _ in results if kind == "ok") == 3
    refusals = [msg for kind, msg in results if kind == "refused"]
    assert len(refusals) == 5 and all("daily budget" in m for m in refusals)
    db = Database.for_home(tmp_path)
    with db.read() as conn:
        assert ledger.committed(conn, 0) == Decimal(3)


def test_spend_groups_and_savings(tmp_path: Path) -> None:
    db = Database.for_home(tmp_path)
    with db.write() as conn:
        ledger.record(conn, charge("j1", "1.00"))
        ledger.record(conn, charge("j2", "0.50"))
        ledger.record_saving(conn, "r9", "sha256:k", "local", "local/sim", Decimal("1.00"))
    (row,) = ledger.spend(db, "model")
    assert row["model"] == "local/sim" and row["spent_usd"] == Decimal("1.5")
    assert row["saved_usd"] == Decimal(1) and row["calls"] == 2


def test_tenant_budgets_count_only_that_tenants_spend(tmp_path: Path) -> None:
    db = Database.for_home(tmp_path)
    with db.write() as conn:
        for render_id, tenant in (("ra", "t_a"), ("rb", "t_b")):
            conn.execute(renders.insert().values(
                id=render_id, key="k", status="rendering", model="local/sim", brief="b",
                plan={}, estimate_usd=0, cost_usd=0, created_at=1, updated_at=1,
                tenant_id=tenant))
        ledger.record(conn, charge("job-a", "3.00", render="ra"))
        a_limits = ledger.Limits(tenant="t_a", tenant_daily=Decimal(4))
        b_limits = ledger.Limits(tenant="t_b", tenant_daily=Decimal(4))
        ledger.reserve(conn, "rb", Decimal("3.50"), b_limits)  # a's $3 is not b's
        with pytest.raises(BudgetError, match=r"only \$1.00 of the daily tenant budget"):
            ledger.reserve(conn, "ra2", Decimal(2), a_limits)
        # Renewing a render's own reservation does not count it against itself.
        ledger.reserve(conn, "rb", Decimal("3.75"), b_limits)
    db.close()
