"""Idempotency keys for POST requests, after Stripe: a retry gets the first answer.

Invariants:

* The claim on a key is one insert that ignores a duplicate, in the caller's write
  transaction. On SQLite the write lock, on Postgres the primary key, decides who owns
  it; nothing ever reads "free" and then writes "mine".
* :func:`complete` saves the answer in the same transaction as the work it reports, so
  a crash leaves both or neither, and a lost claim rolls the work back.
* A key is bound to the fingerprint of its first request (method, path, canonical
  body): the same key with another request is refused (422), never answered with the
  first one's result. While the first request runs, others get 409 and may retry.
* Only requests whose work began are remembered: :func:`abandon` forgets the claim of a
  request that failed validation, so the client can fix it and retry with the same key.
* An in-progress claim older than ``stale_after`` (5 min, far above any request's time)
  belongs to a request that died: it is taken over.
* Keys are per tenant and forgotten ``ttl`` seconds (24 h by default) after their first
  use; a key used again after that starts a new request.

On Postgres the caller's transaction must be READ COMMITTED (the default): after losing
the insert, the next read must see the winner's committed row.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.keys import canonical_json
from ..errors import IdempotencyConflict, IdempotencyMismatch, UserError
from ..store.db import Database, idempotency_keys, insert_ignoring_duplicates

MAX_KEY_LENGTH = 255
DEFAULT_TTL = 86400.0
# A claim whose request died before its work committed would answer 409 forever; the work
# and the answer commit together, so after this long nothing of it can still appear.
STALE_AFTER = 300.0
_CLAIM_TRIES = 3  # a key freed under us (abandoned, expired) is claimed again, a few times


@dataclass(frozen=True)
class Replay:
    """The saved answer of the first request made with a key, to send again."""

    status_code: int
    body: str


def check_key(key: str) -> None:
    """Raise UserError unless ``key`` is 1 to 255 printable ASCII characters."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise UserError(f"an Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII "
                        "characters (a random UUID is a good key)")


def _canonical_body(body: bytes) -> list[str]:
    # A JSON body is compared by meaning, so key order and spacing do not make it new.
    try:
        return ["json", canonical_json(json.loads(body))]
    except (ValueError, RecursionError):
        return ["raw", hashlib.sha256(body).hexdigest()]


def fingerprint(method: str, path: str, body: bytes) -> str:
    """``sha256:`` + hex digest of the method, the path and the (canonical JSON) body."""
    parts = canonical_json([method.upper(), path, *_canonical_body(body)])
    # surrogatepass: JSON may spell lone surrogates (\\ud800), which strict UTF-8 refuses.
    return "sha256:" + hashlib.sha256(parts.encode("utf-8", "surrogatepass")).hexdigest()


def _this(tenant: str, key: str) -> sa.ColumnElement[bool]:
    return sa.and_(idempotency_keys.c.tenant_id == tenant, idempotency_keys.c.key == key)


def _answer(row: Any, fp: str) -> Replay:
    if row.fingerprint != fp:
        raise IdempotencyMismatch()
    if row.state != "done":
        raise IdempotencyConflict()
    return Replay(status_code=int(row.status_code), body=str(row.body))


def begin(conn: Connection, tenant: str, key: str, fp: str, *, now: float | None = None,
          ttl: float = DEFAULT_TTL, stale_after: float = STALE_AFTER) -> Replay | None:
    """Claim ``key`` for a request with fingerprint ``fp``, in the caller's write transaction.

    None: the key is now this request's (in progress); do the work, then :func:`complete`
    or :func:`abandon`. A :class:`Replay`: the key's request already finished; send its
    answer. Raises :class:`IdempotencyMismatch` if the key was used for another request,
    :class:`IdempotencyConflict` if that request is still in progress.
    """
    check_key(key)
    now = time.time() if now is None else now
    claim = {"tenant_id": tenant, "key": key, "fingerprint": fp, "state": "in_progress",
             "created_at": now}
    for _ in range(_CLAIM_TRIES):
        # On Postgres a concurrent uncommitted claim makes this insert wait for its outcome.
        if insert_ignoring_duplicates(conn, idempotency_keys, claim):
            return None
        row = conn.execute(sa.select(idempotency_keys).where(_this(tenant, key))).first()
        if row is None:
            continue
        stale = row.state == "in_progress" and row.created_at <= now - stale_after
        if stale or row.created_at <= now - ttl:
            conn.execute(idempotency_keys.delete().where(
                _this(tenant, key), idempotency_keys.c.created_at == row.created_at))
            continue
        return _answer(row, fp)
    raise IdempotencyConflict()


def complete(conn: Connection, tenant: str, key: str, status_code: int, body: str) -> None:
    """Save the answer of the request that owns ``key``; call it in the work's transaction.

    Raises :class:`IdempotencyConflict` if the claim is gone (abandoned or expired and
    taken by another request), so that the transaction, work included, rolls back.
    """
    saved = conn.execute(idempotency_keys.update()
                         .where(_this(tenant, key), idempotency_keys.c.state == "in_progress")
                         .values(state="done", status_code=status_code, body=body))
    if not saved.rowcount:
        raise IdempotencyConflict(
            "the claim on this Idempotency-Key was lost before the request finished, so "
            "nothing was saved: retry with the same key")


def abandon(conn: Connection, tenant: str, key: str) -> None:
    """Forget an in-progress claim (a request refused before its work began)."""
    conn.execute(idempotency_keys.delete().where(
        _this(tenant, key), idempotency_keys.c.state == "in_progress"))


def prune(db: Database, older_than: float, *, now: float | None = None) -> int:
    """Delete keys first used more than ``older_than`` seconds ago; how many went."""
    cutoff = (time.time() if now is None else now) - older_than
    with db.write() as conn:
        gone = conn.execute(idempotency_keys.delete()
                            .where(idempotency_keys.c.created_at < cutoff))
    return int(gone.rowcount)
