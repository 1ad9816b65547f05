"""Per-provider concurrency across every worker: leased slots in the database.

A provider's limit (``settings.limit_for``) counts the jobs shotline has in flight there,
whichever process or machine made them. One row per shot key in flight holds a slot;
singleflight (calls.py) makes one key one vendor job, so a key is the right holder. A slot
is taken before a shot is claimed, and given back in the same transaction that moves its
call to ``done`` or ``failed``. Invariants:

* Taking a slot is a read-then-write under the ``slots:<provider>`` lock (see db.py): two
  workers cannot both see the last free slot.
* Every slot is a lease: its holder renews it while it polls, and a slot whose holder
  stopped renewing (a killed worker) lapses, so a lost task never blocks a provider for good.
  A step that finds the job of its key already in flight takes its slot back even past the
  limit (:func:`renew`): the vendor has that job whatever the count says.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .db import lock, slots, upsert


def acquire(conn: Connection, provider: str, holder: str, limit: int, lease: float,
            now: float | None = None) -> bool:
    """Take (or keep) a slot of ``provider`` for ``holder``; False if all are taken."""
    now = now or time.time()
    lock(conn, f"slots:{provider}")
    conn.execute(slots.delete().where(slots.c.provider == provider, slots.c.lease_until < now))
    mine = conn.execute(sa.select(slots.c.holder).where(slots.c.holder == holder)).first()
    if mine is None:
        taken = conn.execute(sa.select(sa.func.count()).select_from(slots)
                             .where(slots.c.provider == provider)).scalar_one()
        if taken >= limit:
            return False
    upsert(conn, slots, {"holder": holder, "provider": provider, "lease_until": now + lease})
    return True


def renew(conn: Connection, provider: str, holder: str, lease: float,
          now: float | None = None) -> None:
    """Extend ``holder``'s slot (or take it back, whatever the count, if it lapsed)."""
    now = now or time.time()
    upsert(conn, slots, {"holder": holder, "provider": provider, "lease_until": now + lease})


def release(conn: Connection, holder: str) -> None:
    conn.execute(slots.delete().where(slots.c.holder == holder))


def in_use(conn: Connection, provider: str, now: float | None = None) -> int:
    """Slots of ``provider`` held right now (for tests and metrics)."""
    now = now or time.time()
    return int(conn.execute(sa.select(sa.func.count()).select_from(slots).where(
        slots.c.provider == provider, slots.c.lease_until >= now)).scalar_one())
