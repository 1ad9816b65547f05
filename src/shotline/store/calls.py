"""The per-shot recovery points and the singleflight claim, as committed transactions.

A shot key moves through ``submitting -> submitted(job) -> done`` (or ``failed``) in the
``calls`` table; each arrow is one committed transaction and states only move forward.
That table is also the singleflight: whoever inserts ``submitting`` for a key is the one
process allowed to call ``submit``; everyone else follows the job it records.

* ``submitted`` carries the provider's job ref, committed before anyone polls, so a
  restarted process resumes polling instead of paying for a second submit.
* The claim is a read-then-write under the ``call:<key>`` lock (see db.py): on SQLite the
  file's write lock, on Postgres an advisory lock per key, so exactly one process reads
  "no row" or "failed" and becomes the leader.
* Moving a call to ``done`` or ``failed`` gives back its provider slot (slots.py) in the
  same transaction: no job of that key is in flight any more.
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
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import slots
from .db import Database, calls, clips, lock, render_shots

LEASE_SECONDS = 120.0


def new_owner() -> str:
    """A claim owner: host and pid (to tell a dead process) plus a per-render nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
    since: float = 0.0  # for 'reconcile': when the dead owner claimed the key (its submit
    # went out after this), so a lookup can tell its job from an older take's


def claim(conn: Connection, key: str, provider: str, model: str, owner: str,
          now: float | None = None) -> Claim:
    """Decide, under the key's lock, who submits ``key``; 'lead' means we just claimed it."""
    now = now or time.time()
    lock(conn, f"call:{key}")
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
    return Claim("reconcile", attempts=row.attempts, since=row.heartbeat)


def in_flight(db: Database, keys: list[str]) -> int:
    """How many of ``keys`` a vendor has (or may have) a job for that is not yet done."""
    if not keys:
        return 0
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(calls).where(
            calls.c.key.in_(sorted(set(keys))),
            calls.c.state.in_(("submitting", "submitted")))).scalar_one())


def drawn_by(conn: Connection, render_id: str) -> set[str]:
    """The models that made (or are making) a render's clips, from its shot keys."""
    keys = [r.key for r in conn.execute(sa.select(render_shots.c.key)
                                        .where(render_shots.c.render_id == render_id))]
    if not keys:
        return set()
    made = {r.model for r in conn.execute(sa.select(clips.c.model).where(clips.c.key.in_(keys)))}
    return made | {r.model for r in conn.execute(sa.select(calls.c.model)
                                                 .where(calls.c.key.in_(keys)))}


def set_call(db: Database, key: str, state: str, **values: Any) -> None:
    with db.write() as conn:
        set_call_in(conn, key, state, **values)


def set_call_in(conn: Connection, key: str, state: str, **values: Any) -> None:
    conn.execute(calls.update().where(calls.c.key == key)
                 .values(**{"state": state, "heartbeat": time.time(), **values}))
    if state in ("done", "failed"):  # no job of this key is in flight any more
        slots.release(conn, key)
