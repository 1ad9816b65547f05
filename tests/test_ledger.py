"""The ledger and budgets, case by case, on SQLite and on Postgres.

The races between processes are in test_races.py; these are the rules one transaction
applies: what counts against a cap, what a reservation covers, and that a refusal writes
nothing.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from shotline.errors import BudgetError
from shotline.store import ledger
from shotline.store.db import Database, renders, reservations

NOW = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC).timestamp()
YESTERDAY = NOW - 86400


def charge(job: str, amount: str = "1.00", render: str = "r1") -> ledger.Charge:
    return ledger.Charge(render, "sha256:k", "local", "local/sim", job, 4, False,
                         Decimal("0.25"), Decimal(amount))


def reservation(db: Database, render_id: str) -> tuple[Decimal, str] | None:
    with db.read() as conn:
        row = conn.execute(sa.select(reservations.c.amount, reservations.c.state)
                           .where(reservations.c.render_id == render_id)).first()
    return None if row is None else (row.amount, row.state)


def test_one_row_per_provider_job(any_db: Database) -> None:
    with any_db.write() as conn:
        assert ledger.record(conn, charge("job-1")) is True
        assert ledger.record(conn, charge("job-1")) is False
        assert ledger.record(conn, charge("job-2")) is True
    assert [r["provider_job_id"] for r in ledger.rows(any_db)] == ["job-1", "job-2"]


def test_per_render_cap_refuses_and_writes_nothing(any_db: Database) -> None:
    with pytest.raises(BudgetError, match=r"estimate is \$3.00, over the per-render cap of \$2.00"):
        with any_db.write() as conn:
            ledger.reserve(conn, "r1", Decimal(3), ledger.Limits(per_render=Decimal(2)))
    assert reservation(any_db, "r1") is None


def test_the_per_render_cap_bounds_what_is_billed_not_what_was_estimated(any_db: Database) -> None:
    limits = ledger.Limits(per_render=Decimal("1.00"))
    with any_db.write() as conn:
        ledger.reserve(conn, "r1", Decimal("0.80"), limits)
        ledger.record(conn, charge("failed-1", "0.40"), now=NOW)  # two billed failures
        ledger.record(conn, charge("failed-2", "0.40"), now=NOW)
    # Retrying both shots would take the render to $1.60 in all: refused, nothing changes.
    with pytest.raises(BudgetError, match=r"up to \$1.60 in all \(\$0.80 billed so far\)"):
        with any_db.write() as conn:
            ledger.reserve(conn, "r1", Decimal("1.60"), limits, grow_only=True)
    assert reservation(any_db, "r1") == (Decimal("0.80"), "open")
    # One retry ($1.20 in all) still fits.
    with any_db.write() as conn:
        assert ledger.reserve(conn, "r1", Decimal("1.00"), limits, grow_only=True)
    assert reservation(any_db, "r1") == (Decimal("1.00"), "open")


def test_grow_only_leaves_a_reservation_that_covers_the_need(any_db: Database) -> None:
    limits = ledger.Limits(per_render=Decimal("0.10"))  # would refuse anything re-checked
    with any_db.write() as conn:
        ledger.reserve(conn, "r1", Decimal("0.10"), limits)
        assert ledger.reserve(conn, "r1", Decimal("0.05"), limits, grow_only=True) is False
    assert reservation(any_db, "r1") == (Decimal("0.10"), "open")


def test_daily_cap_counts_ledger_and_what_reservations_may_still_bill(any_db: Database) -> None:
    limits = ledger.Limits(daily=Decimal(5))
    with any_db.write() as conn:
        ledger.record(conn, charge("j1", "2.00", render="old"), now=NOW)
        ledger.reserve(conn, "r2", Decimal(2), limits, now=NOW)
        ledger.record(conn, charge("j2", "0.50", render="r2"), now=NOW)
        # $2 billed, r2 may bill $2 in all ($0.50 of it billed): $4 committed.
        assert ledger.committed(conn, YESTERDAY) == Decimal(4)
    with pytest.raises(BudgetError, match=r"only \$1.00 of the daily budget of \$5.00 is left"):
        with any_db.write() as conn:
            ledger.reserve(conn, "r3", Decimal(2), limits, now=NOW)
    with any_db.write() as conn:  # once r2 settles having spent only $0.50, room comes back
        ledger.settle(conn, "r2")
        ledger.reserve(conn, "r3", Decimal("2.50"), limits, now=NOW)


def test_a_resumed_render_counts_what_it_billed_once(any_db: Database) -> None:
    """Renewed with billed + what is left, a render neither counts itself twice nor hides
    what it may still bill from the others."""
    limits = ledger.Limits(daily=Decimal("2.00"))
    with any_db.write() as conn:
        ledger.reserve(conn, "r1", Decimal("1.20"), limits, now=NOW)
        ledger.record(conn, charge("j1", "0.40"), now=NOW)
        ledger.settle(conn, "r1")  # it failed after one shot
        ledger.reserve(conn, "r1", Decimal("1.20"), limits, now=NOW)  # resumed: 0.40 + 0.80
        assert ledger.committed(conn, YESTERDAY) == Decimal("1.20")
    with pytest.raises(BudgetError, match=r"only \$0.80 of the daily budget"):
        with any_db.write() as conn:
            ledger.reserve(conn, "r2", Decimal("0.90"), limits, now=NOW)


def test_yesterdays_billing_is_not_todays(any_db: Database) -> None:
    limits = ledger.Limits(daily=Decimal("1.00"))
    with any_db.write() as conn:
        ledger.record(conn, charge("j1", "0.90", render="r1"), now=YESTERDAY)
        # The same render, resumed today: only what it may bill today counts today.
        ledger.reserve(conn, "r1", Decimal("1.90"), limits, now=NOW)
    assert reservation(any_db, "r1") == (Decimal("1.90"), "open")


def test_spend_groups_and_savings(any_db: Database) -> None:
    with any_db.write() as conn:
        ledger.record(conn, charge("j1", "1.00"))
        ledger.record(conn, charge("j2", "0.50"))
        ledger.record_saving(conn, "r9", "sha256:k", "local", "local/sim", Decimal("1.00"))
    (row,) = ledger.spend(any_db, "model")
    assert row["model"] == "local/sim" and row["spent_usd"] == Decimal("1.5")
    assert row["saved_usd"] == Decimal(1) and row["calls"] == 2


def test_tenant_budgets_count_only_that_tenants_spend(any_db: Database) -> None:
    with any_db.write() as conn:
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
