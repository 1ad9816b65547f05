"""The ledger of billed provider attempts, spend summaries, and budget reservations.

Invariants:

* One row per billed provider attempt, unique on (provider, provider job id): writing the
  same job twice is a no-op, so a retried or resumed worker can never double a charge.
* A reservation is what a render may bill in all, what it has billed already included.
  It is taken before the first provider call, and grown before any later attempt that
  could be billed (a retry on a model that bills failures, a re-roll, a resumed render).
  A budget therefore bounds what can be billed, not only what was estimated.
* Every reservation is checked against every cap in one transaction that holds the
  budget locks (db.lock: ``budget:render:<id>``, then ``budget:tenant:<id>`` when the
  tenant has caps, then ``budget:global`` when the operator has): two renders racing for
  the last dollars of a budget cannot both get them, on SQLite or on Postgres.
* What counts against a cap in a window (a UTC day or month): every ledger row of the
  window, plus what each open reservation may still bill (its amount less what its render
  has billed). Tenant caps count only that tenant's renders; the operator's count all.
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

from ..errors import BudgetError
from .db import (
    Database,
    Money,
    insert_ignoring_duplicates,
    ledger,
    lock,
    renders,
    reservations,
    savings,
    tenants,
)


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


def limits(conn: Connection, *, tenant: str | None, per_render: Decimal | None,
           daily: Decimal | None, monthly: Decimal | None) -> Limits:
    """The caps that apply to one render: its own, its tenant's and the operator's."""
    row = None if tenant is None else conn.execute(
        sa.select(tenants.c.daily_budget_usd, tenants.c.monthly_budget_usd)
        .where(tenants.c.id == tenant)).first()
    return Limits(per_render=per_render, daily=daily, monthly=monthly, tenant=tenant,
                  tenant_daily=row.daily_budget_usd if row else None,
                  tenant_monthly=row.monthly_budget_usd if row else None)


def billed(conn: Connection, render_id: str, *, since: float | None = None) -> Decimal:
    """What the ledger holds for one render (from ``since`` on), failed attempts included."""
    query = sa.select(sa.func.sum(ledger.c.amount)).where(ledger.c.render_id == render_id)
    if since is not None:
        query = query.where(ledger.c.created_at >= since)
    return Decimal(conn.execute(query).scalar_one() or 0)  # sum() keeps the Money type


def _usage(conn: Connection, since: float, *, tenant: str | None,
           render_id: str | None) -> tuple[Decimal, Decimal, Decimal]:
    """(used by everyone else in the window, what ``render_id`` billed in all, and since).

    One statement, so one snapshot: a render recording a charge moves money from
    "reserved" to "spent", and two separate reads could catch it in neither (on Postgres,
    where writers do not wait for this transaction's reads).
    """
    def of_tenant(column: Any) -> Any:
        return sa.true() if tenant is None else column.in_(_of_tenant(tenant))

    others = sa.true() if render_id is None else sa.or_(ledger.c.render_id.is_(None),
                                                         ledger.c.render_id != render_id)
    spent = (sa.select(sa.func.coalesce(sa.func.sum(ledger.c.amount), 0))
             .where(ledger.c.created_at >= since, others, of_tenant(ledger.c.render_id)))
    is_open = reservations.c.state == "open"
    paid = (sa.select(ledger.c.render_id, sa.func.sum(ledger.c.amount).label("paid"))
            .where(ledger.c.render_id.in_(sa.select(reservations.c.render_id).where(is_open)))
            .group_by(ledger.c.render_id).subquery())
    left = reservations.c.amount - sa.func.coalesce(paid.c.paid, 0)
    still = (sa.select(sa.func.coalesce(sa.func.sum(sa.case((left > 0, left), else_=0)), 0))
             .select_from(reservations.outerjoin(paid, paid.c.render_id == reservations.c.render_id))
             .where(is_open, of_tenant(reservations.c.render_id),
                    sa.true() if render_id is None else reservations.c.render_id != render_id))
    own = sa.select(sa.func.coalesce(sa.func.sum(ledger.c.amount), 0)).where(
        ledger.c.render_id == render_id)
    own_since = own.where(ledger.c.created_at >= since)
    row = conn.execute(sa.select(*(sa.type_coerce(q.scalar_subquery(), Money())
                                   for q in (spent, still, own, own_since)))).one()
    used, left_open, own_all, own_window = (Decimal(v or 0) for v in row)
    return used + left_open, own_all, own_window


def committed(conn: Connection, since: float, *, tenant: str | None = None,
              excluding: str | None = None) -> Decimal:
    """Money billed since ``since``, plus what open reservations may still bill.

    With ``tenant``, only that tenant's renders count; ``excluding`` leaves one render out
    entirely (the one whose reservation is being set).
    """
    return _usage(conn, since, tenant=tenant, render_id=excluding)[0]


def reserve(conn: Connection, render_id: str, total: Decimal, limits: Limits,
            now: float | None = None, *, grow_only: bool = False) -> bool:
    """Let a render bill up to ``total`` in all, or raise BudgetError saying what does not fit.

    ``total`` includes what the render has billed already. With ``grow_only``, an open
    reservation that covers ``total`` already is left as it is (and no cap is read). True
    if the reservation was written. Call it in a write transaction: it takes the budget
    locks, which are held until that transaction ends.
    """
    now = now or time.time()
    scopes = [f"budget:render:{render_id}"]
    if limits.tenant is not None and (limits.tenant_daily is not None
                                      or limits.tenant_monthly is not None):
        scopes.append(f"budget:tenant:{limits.tenant}")
    if limits.daily is not None or limits.monthly is not None:
        scopes.append("budget:global")
    lock(conn, *scopes)
    existing = conn.execute(sa.select(reservations.c.amount, reservations.c.state)
                            .where(reservations.c.render_id == render_id)).first()
    if grow_only and existing is not None and existing.state == "open" \
            and existing.amount >= total:
        return False
    paid = billed(conn, render_id)
    if limits.per_render is not None and total > limits.per_render:
        raise BudgetError(_over_render_cap(total, paid, limits.per_render))
    caps = (("day", limits.daily, None, "raise SHOTLINE_DAILY_BUDGET_USD"),
            ("month", limits.monthly, None, "raise SHOTLINE_MONTHLY_BUDGET_USD"),
            ("day", limits.tenant_daily, limits.tenant, "ask the operator to raise it"),
            ("month", limits.tenant_monthly, limits.tenant, "ask the operator to raise it"))
    for period, cap, tenant, remedy in caps:
        if cap is None:
            continue
        others, own_all, own_window = _usage(conn, _window_start(now, period), tenant=tenant,
                                             render_id=render_id)
        # Everyone else's part of the window, and what this render billed in it already;
        # then what it may still bill.
        used, more = others + own_window, max(total - own_all, Decimal(0))
        if used + more > cap:
            adjective = ("daily" if period == "day" else "monthly") + (" tenant" if tenant else "")
            what = "the estimate" if not own_all else "what this render may still bill"
            raise BudgetError(
                f"{what} is ${more:.2f} but only ${max(cap - used, Decimal(0)):.2f} of the "
                f"{adjective} budget of ${cap:.2f} is left (${used:.2f} spent or reserved): "
                f"{remedy} or wait for the next {period}")
    if existing is None:
        conn.execute(reservations.insert().values(
            render_id=render_id, amount=total, state="open", created_at=now))
    else:  # renewed: resumed, re-rolled, or grown before an attempt that may be billed
        conn.execute(reservations.update().where(reservations.c.render_id == render_id)
                     .values(amount=total, state="open", created_at=now))
    return True


def _over_render_cap(total: Decimal, paid: Decimal, cap: Decimal) -> str:
    if not paid:
        return (f"the estimate is ${total:.2f}, over the per-render cap of ${cap:.2f}: raise "
                "--max-usd, shorten the brief, or pick a cheaper model (`shotline estimate` "
                "compares)")
    return (f"this render may bill up to ${total:.2f} in all (${paid:.2f} billed so far), over "
            f"its cap of ${cap:.2f}: raise --max-usd to let it go on; the clips already made "
            "are kept and will not be paid for again")


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
