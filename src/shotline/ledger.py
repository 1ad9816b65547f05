"""The ledger of billed provider attempts, spend summaries, and budget reservations.

Invariants:

* One row per billed provider attempt, unique on (provider, provider job id): writing the
  same job twice is a no-op, so a retried or resumed worker can never double a charge.
* A render reserves its estimate before the first provider call, inside the same
  write-locked transaction that checks the limits, so two renders racing for the last
  dollars of a budget cannot both get them. Committed spend in a window is the ledger
  plus, for every open reservation, the larger of its estimate and what it has billed.
  A render renewing its own reservation (resumed, or re-rolling a shot) is not counted
  against itself.
* Tenant budgets count only the spend of that tenant's renders; the operator's budgets
  (settings) count everyone's.
* Reservations are settled when a render ends; the ledger is the truth about money.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .db import (
    Database,
    insert_ignoring_duplicates,
    ledger,
    renders,
    reservations,
    savings,
    tenants,
)
from .errors import BudgetError


@dataclass(frozen=True)
class Charge:
    """One billed attempt, as it goes into the ledger."""

    render_id: str | None
    shot_key: str
    provider: str
    model: str
    provider_job_id: str
    seconds_billed: int
    audio: bool
    unit_price: Decimal
    amount: Decimal
    outcome: str = "succeeded"


@dataclass(frozen=True)
class Limits:
    """Spending caps in USD; None means no cap. ``tenant_*`` apply to ``tenant``'s renders."""

    per_render: Decimal | None = None
    daily: Decimal | None = None
    monthly: Decimal | None = None
    tenant: str | None = None
    tenant_daily: Decimal | None = None
    tenant_monthly: Decimal | None = None


def limits_for(conn: Connection, tenant: str | None, *, per_render: Decimal | None,
               daily: Decimal | None, monthly: Decimal | None) -> Limits:
    """The caps a render of ``tenant`` is held to: its own, the operator's and its tenant's."""
    row = None if tenant is None else conn.execute(
        sa.select(tenants).where(tenants.c.id == tenant)).first()
    return Limits(per_render=per_render, daily=daily, monthly=monthly, tenant=tenant,
                  tenant_daily=row.daily_budget_usd if row else None,
                  tenant_monthly=row.monthly_budget_usd if row else None)


def extend(conn: Connection, render_id: str, amount: Decimal, per_render: Decimal | None,
           daily: Decimal | None, monthly: Decimal | None) -> None:
    """Reserve ``amount`` more for a running render (BudgetError if it does not fit)."""
    held = conn.execute(sa.select(reservations.c.amount)
                        .where(reservations.c.render_id == render_id)).scalar()
    tenant = conn.execute(sa.select(renders.c.tenant_id)
                          .where(renders.c.id == render_id)).scalar()
    total = Decimal(held or 0) + amount
    reserve(conn, render_id, total, limits_for(conn, tenant, per_render=per_render, daily=daily,
                                                monthly=monthly))


def record(conn: Connection, charge: Charge, now: float | None = None) -> bool:
    """Write a ledger row in the caller's transaction; False if that job is already there."""
    return insert_ignoring_duplicates(conn, ledger, {
        **charge.__dict__, "created_at": now or time.time(),
    })


def record_saving(conn: Connection, render_id: str, shot_key: str, provider: str, model: str,
                  amount: Decimal) -> None:
    """Note what a cache hit would have cost, for `shotline spend`."""
    conn.execute(savings.insert().values(
        render_id=render_id, shot_key=shot_key, provider=provider, model=model, amount=amount,
        created_at=time.time()))


def _window_start(now: float, period: str) -> float:
    day = dt.datetime.fromtimestamp(now, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day.replace(day=1) if period == "month" else day).timestamp()


def _of_tenant(tenant: str) -> Any:
    """The ids of a tenant's renders, as a subquery (ledger rows belong to renders)."""
    return sa.select(renders.c.id).where(renders.c.tenant_id == tenant)


def committed(conn: Connection, since: float, *, tenant: str | None = None,
              excluding: str | None = None) -> Decimal:
    """Money spent or promised since ``since``: ledger plus open reservations.

    With ``tenant``, only that tenant's renders count; ``excluding`` leaves one render's
    reservation out (the one being renewed), though not what it has already billed.
    """
    res_query = sa.select(reservations).where(reservations.c.state == "open",
                                              reservations.c.created_at >= since)
    ledger_query = sa.select(ledger.c.render_id, ledger.c.amount).where(ledger.c.created_at >= since)
    if tenant is not None:
        res_query = res_query.where(reservations.c.render_id.in_(_of_tenant(tenant)))
        ledger_query = ledger_query.where(ledger.c.render_id.in_(_of_tenant(tenant)))
    open_res = {r.render_id: Decimal(r.amount) for r in conn.execute(res_query)
                if r.render_id != excluding}
    total = Decimal(0)
    billed_open: dict[str, Decimal] = {}
    for row in conn.execute(ledger_query):
        if row.render_id in open_res:
            billed_open[row.render_id] = billed_open.get(row.render_id, Decimal(0)) + row.amount
        else:
            total += Decimal(row.amount)
    for render_id, amount in open_res.items():
        total += max(amount, billed_open.get(render_id, Decimal(0)))
    return total


def reserve(conn: Connection, render_id: str, amount: Decimal, limits: Limits,
            now: float | None = None) -> None:
    """Reserve ``amount`` for a render, or raise BudgetError saying what does not fit."""
    now = now or time.time()
    if limits.per_render is not None and amount > limits.per_render:
        raise BudgetError(
            f"the estimate is ${amount:.2f}, over the per-render cap of "
            f"${limits.per_render:.2f}: raise --max-usd, shorten the brief, or pick a "
            "cheaper model (`shotline estimate` compares)")
    caps = (("day", limits.daily, None, "raise SHOTLINE_DAILY_BUDGET_USD"),
            ("month", limits.monthly, None, "raise SHOTLINE_MONTHLY_BUDGET_USD"),
            ("day", limits.tenant_daily, limits.tenant, "ask the operator to raise it"),
            ("month", limits.tenant_monthly, limits.tenant, "ask the operator to raise it"))
    for period, cap, tenant, remedy in caps:
        if cap is None:
            continue
        adjective = ("daily" if period == "day" else "monthly") + (" tenant" if tenant else "")
        used = committed(conn, _window_start(now, period), tenant=tenant, excluding=render_id)
        if used + amount > cap:
            raise BudgetError(
                f"the estimate is ${amount:.2f} but only ${max(cap - used, Decimal(0)):.2f} "
                f"of the {adjective} budget of ${cap:.2f} is left (${used:.2f} spent or "
                f"reserved): {remedy} or wait for the next {period}")
    existing = conn.execute(sa.select(reservations.c.state)
                            .where(reservations.c.render_id == render_id)).first()
    if existing is None:
        conn.execute(reservations.insert().values(
            render_id=render_id, amount=amount, state="open", created_at=now))
    else:  # a resumed render: its reservation is renewed with what is left to make
        conn.execute(reservations.update().where(reservations.c.render_id == render_id)
                     .values(amount=amount, state="open", created_at=now))


def billed(conn: Connection, render_id: str) -> Decimal:
    """What the ledger holds for one render: every billed attempt, failed ones included."""
    total = conn.execute(sa.select(sa.func.sum(ledger.c.amount))  # keeps the Money type
                         .where(ledger.c.render_id == render_id)).scalar_one()
    return Decimal(total or 0)


def shot_billed(conn: Connection, render_id: str, shot_keys: list[str]) -> Decimal:
    """What the ledger holds for some shots' calls made by one render."""
    total = conn.execute(sa.select(sa.func.sum(ledger.c.amount)).where(
        ledger.c.render_id == render_id, ledger.c.shot_key.in_(shot_keys))).scalar_one()
    return Decimal(total or 0)


def settle(conn: Connection, render_id: str) -> None:
    conn.execute(reservations.update().where(reservations.c.render_id == render_id)
                 .values(state="settled"))


def rows(db: Database, render_id: str | None = None, *, tenant: str | None = None,
         limit: int | None = None) -> list[dict[str, Any]]:
    """Ledger rows, oldest first; with ``tenant``, only that tenant's renders' rows."""
    query = sa.select(ledger).order_by(ledger.c.id).limit(limit)
    if render_id:
        query = query.where(ledger.c.render_id == render_id)
    if tenant is not None:
        query = query.where(ledger.c.render_id.in_(_of_tenant(tenant)))
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def spend(db: Database, by: str = "day", *, tenant: str | None = None) -> list[dict[str, Any]]:
    """Spend and cache savings grouped by day, provider or model."""
    def group(row: Any) -> str:
        if by == "day":
            return dt.datetime.fromtimestamp(row.created_at, dt.UTC).date().isoformat()
        return str(getattr(row, by))

    out: dict[str, dict[str, Any]] = {}
    billed, saved = sa.select(ledger), sa.select(savings)
    if tenant is not None:
        billed = billed.where(ledger.c.render_id.in_(_of_tenant(tenant)))
        saved = saved.where(savings.c.render_id.in_(_of_tenant(tenant)))
    with db.read() as conn:
        for row in conn.execute(billed):
            entry = out.setdefault(group(row), {"spent_usd": Decimal(0), "saved_usd": Decimal(0),
                                                "calls": 0, "seconds_billed": 0})
            entry["spent_usd"] += row.amount
            entry["calls"] += 1
            entry["seconds_billed"] += row.seconds_billed
        for row in conn.execute(saved):
            entry = out.setdefault(group(row), {"spent_usd": Decimal(0), "saved_usd": Decimal(0),
                                                "calls": 0, "seconds_billed": 0})
            entry["saved_usd"] += row.amount
    return [{by: k, **v} for k, v in sorted(out.items())]
