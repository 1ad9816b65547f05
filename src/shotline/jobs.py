"""Render rows and the per-shot recovery points, as committed transactions.

A shot key moves through ``submitting -> submitted(job) -> done`` (or ``failed``) in the
``calls`` table; each arrow is one committed transaction and states only move forward.
That table is also the singleflight: whoever inserts ``submitting`` for a key is the one
process allowed to call ``submit``; everyone else follows the job it records.

* ``submitted`` carries the provider's job ref, committed before anyone polls, so a
  restarted process resumes polling instead of paying for a second submit.
* ``submitting`` whose owner is gone (killed between the claim and the job ref) is
  *ambiguous*: the vendor may or may not have the job. It is reconciled by asking the
  provider for a job with this key, never by submitting again blindly.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .db import Database, calls, render_shots, renders
from .quality import Flag

LEASE_SECONDS = 120.0


def new_owner() -> str:
    """A claim owner: host and pid (to tell a dead process) plus a per-render nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def new_render_id() -> str:
    return "r_" + uuid.uuid4().hex[:16]


def owner_alive(owner: str | None, heartbeat: float, now: float) -> bool:
    """Whether the process that claimed a key may still be working on it."""
    if not owner:
        return False
    host, pid, _ = (owner.split(":") + ["", ""])[:3]
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return now - heartbeat < LEASE_SECONDS


@dataclass(frozen=True)
class Claim:
    """What this process should do about a shot key."""

    action: Literal["lead", "follow", "wait", "reconcile", "done"]
    job: dict[str, Any] | None = None
    attempts: int = 0


def claim(conn: Connection, key: str, provider: str, model: str, owner: str,
          now: float | None = None) -> Claim:
    """Decide, under the write lock, who submits ``key``; 'lead' means we just claimed it."""
    now = now or time.time()
    row = conn.execute(sa.select(calls).where(calls.c.key == key)).first()
    if row is None:
        conn.execute(calls.insert().values(key=key, state="submitting", provider=provider,
                                           model=model, owner=owner, heartbeat=now, attempts=1))
        return Claim("lead", attempts=1)
    if row.state == "done":
        return Claim("done", row.job, row.attempts)
    if row.state == "submitted":
        return Claim("follow", row.job, row.attempts)
    if row.state == "failed":
        conn.execute(calls.update().where(calls.c.key == key).values(
            state="submitting", owner=owner, heartbeat=now, attempts=row.attempts + 1,
            job=None, error=None))
        return Claim("lead", attempts=row.attempts + 1)
    if row.owner == owner:  # our own earlier attempt: a retry
        conn.execute(calls.update().where(calls.c.key == key).values(
            heartbeat=now, attempts=row.attempts + 1))
        return Claim("lead", attempts=row.attempts + 1)
    if owner_alive(row.owner, row.heartbeat, now):
        return Claim("wait", attempts=row.attempts)
    conn.execute(calls.update().where(calls.c.key == key).values(owner=owner, heartbeat=now))
    return Claim("reconcile", attempts=row.attempts)


def set_call(db: Database, key: str, state: str, **values: Any) -> None:
    with db.write() as conn:
        set_call_in(conn, key, state, **values)


def set_call_in(conn: Connection, key: str, state: str, **values: Any) -> None:
    conn.execute(calls.update().where(calls.c.key == key)
                 .values(state=state, heartbeat=time.time(), **values))


# --- renders --------------------------------------------------------------------------


def open_render(conn: Connection, key: str, model: str, brief: str, plan: dict[str, Any],
                shot_keys: list[str], estimate: Decimal) -> str:
    """Create a render row, or reuse an unfinished one with the same key (a resumed run)."""
    now = time.time()
    row = conn.execute(sa.select(renders.c.id).where(
        renders.c.key == key, renders.c.status.in_(("rendering", "stitching", "failed")))
        .order_by(renders.c.created_at.desc())).first()
    if row is not None:
        conn.execute(renders.update().where(renders.c.id == row.id).values(
            status="rendering", error=None, updated_at=now, estimate_usd=estimate))
        return str(row.id)
    render_id = new_render_id()
    conn.execute(renders.insert().values(
        id=render_id, key=key, status="rendering", model=model, brief=brief, plan=plan,
        estimate_usd=estimate, cost_usd=0, created_at=now, updated_at=now))
    conn.execute(render_shots.insert(), [
        {"render_id": render_id, "idx": i, "key": k, "state": "pending", "cached": False,
         "cost_usd": 0} for i, k in enumerate(shot_keys)])
    return render_id


def set_shot(conn: Connection, render_id: str, idx: int, **values: Any) -> None:
    conn.execute(render_shots.update().where(render_shots.c.render_id == render_id,
                                             render_shots.c.idx == idx).values(**values))


def set_render(conn: Connection, render_id: str, **values: Any) -> None:
    conn.execute(renders.update().where(renders.c.id == render_id)
                 .values(updated_at=time.time(), **values))


def output_flags(conn: Connection, render_id: str) -> list[Flag]:
    """The quality flags recorded on a render's output."""
    stored = conn.execute(sa.select(renders.c.quality).where(renders.c.id == render_id)).scalar()
    return [Flag.from_json(f) for f in stored or []]


def finish_shared(conn: Connection, render_id: str, status: str, **values: Any) -> bool:
    """Set the status of a render several CLI processes run, unless it is closed."""
    closed = ("cancelled", "rejected", "published")
    return bool(conn.execute(renders.update().where(renders.c.id == render_id,
                                                    renders.c.status.not_in(closed))
                             .values(status=status, updated_at=time.time(), **values)).rowcount)


def list_renders(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(renders.c.id, renders.c.status, renders.c.model, renders.c.seconds,
                      renders.c.cost_usd, renders.c.estimate_usd, renders.c.output,
                      renders.c.created_at, renders.c.error)
            .order_by(renders.c.created_at.desc()).limit(limit))]


def get_render(db: Database, render_id: str) -> dict[str, Any] | None:
    with db.read() as conn:
        row = conn.execute(sa.select(renders).where(renders.c.id == render_id)).first()
        if row is None:
            return None
        shots = [dict(r._mapping) for r in conn.execute(
            sa.select(render_shots).where(render_shots.c.render_id == render_id)
            .order_by(render_shots.c.idx))]
    return {**dict(row._mapping), "shots": shots}
