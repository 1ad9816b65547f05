"""Tenants of the service and the API keys they authenticate with.

Invariants:

* A key is ``sl_live_`` + 32 random base62 characters + the base62 CRC32 of those 32
  (6 characters). The checksum lets a secret scanner, or :func:`looks_like_key`, tell a
  real key from a typo or a look-alike offline; garbage is refused before any query.
* Only the SHA-256 of a key is stored (a key with ~190 random bits needs no slow hash),
  beside its first 12 characters for lists. The key itself exists once, in the
  :class:`NewKey` returned by :func:`create_key`.
* Keys and webhook secrets never appear in a log line, an error message or a repr.
* A revoked key stays listed (with ``revoked_at``) and never authenticates again.
* ``last_used_at`` is written at most once a minute per key, so a busy key costs reads,
  not a write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import UserError
from ..store.db import Database, api_keys, tenants
from . import webhooks

KEY_PREFIX = "sl_live_"
VISIBLE_CHARS = 12
MAX_NAME = 200
TOUCH_EVERY = 60.0  # seconds between two writes of one key's last_used_at
MAX_BUDGET = Decimal(10) ** 12  # far below what Money's micro-dollar BigInteger can hold

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_RANDOM_CHARS = 32
_CHECK_CHARS = 6  # 62**6 > 2**32, so any CRC32 fits
_KEY_SHAPE = re.compile(f"{KEY_PREFIX}[0-9A-Za-z]{{{_RANDOM_CHARS + _CHECK_CHARS}}}")

_TENANT_COLUMNS = (tenants.c.id, tenants.c.name, tenants.c.daily_budget_usd,
                   tenants.c.monthly_budget_usd, tenants.c.created_at)
_KEY_COLUMNS = (api_keys.c.id, api_keys.c.tenant_id.label("tenant"), api_keys.c.name,
                api_keys.c.prefix, api_keys.c.created_at, api_keys.c.last_used_at,
                api_keys.c.revoked_at)


@dataclass(frozen=True)
class NewKey:
    """A key just made: the only time the key itself can be read. Secrets stay out of repr."""

    key: str = field(repr=False)
    key_id: str
    tenant: str
    webhook_secret: str = field(repr=False)


# --- the key format ----------------------------------------------------------------------


def _base62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    return digits.rjust(width, "0")


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode("ascii")), _CHECK_CHARS)


def _new_key() -> str:
    random_part = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_CHARS))
    return KEY_PREFIX + random_part + _checksum(random_part)


def looks_like_key(s: str) -> bool:
    """True if ``s`` has the shape of a shotline key and its checksum is right (no database)."""
    if not _KEY_SHAPE.fullmatch(s):
        return False
    random_part = s[len(KEY_PREFIX):len(KEY_PREFIX) + _RANDOM_CHARS]
    return hmac.compare_digest(s[-_CHECK_CHARS:], _checksum(random_part))


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


# --- keys --------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    # The name is not echoed: it may hold the very characters that make it invalid.
    if not 1 <= len(name) <= MAX_NAME:
        raise UserError(f"a name must be 1 to {MAX_NAME} characters long (got {len(name)})")
    if not name.isprintable() or not name.strip():
        raise UserError("a name must be printable characters (no tabs, newlines or control "
                        "characters) and not only spaces")


def _secret_of(conn: Connection, tenant_id: str) -> str:
    secret = conn.execute(sa.select(tenants.c.webhook_secret)
                          .where(tenants.c.id == tenant_id)).scalar_one_or_none()
    if secret is None:
        raise UserError(f"no tenant {tenant_id!r}: `shotline tenants list` shows them")
    return str(secret)


def _insert_tenant(conn: Connection, name: str, now: float) -> tuple[str, str]:
    tenant_id, secret = "t_" + secrets.token_hex(8), webhooks.new_secret()
    conn.execute(tenants.insert().values(id=tenant_id, name=name, webhook_secret=secret,
                                         created_at=now))
    return tenant_id, secret


def create_key(db: Database, name: str, tenant: str | None = None) -> NewKey:
    """Make an API key; without ``tenant``, also a new tenant named ``name`` to own it.

    The returned :class:`NewKey` is the only copy of the key. Nothing is written when the
    name is invalid or ``tenant`` does not exist (both raise :class:`UserError`).
    """
    _check_name(name)
    now, key, key_id = time.time(), _new_key(), "key_" + secrets.token_hex(8)
    with db.write() as conn:
        if tenant is None:
            tenant, secret = _insert_tenant(conn, name, now)
        else:
            secret = _secret_of(conn, tenant)
        conn.execute(api_keys.insert().values(
            id=key_id, tenant_id=tenant, name=name, prefix=key[:VISIBLE_CHARS], hash=_hash(key),
            created_at=now))
    return NewKey(key=key, key_id=key_id, tenant=tenant, webhook_secret=secret)


def authenticate(db: Database, key: str, *, now: float | None = None) -> str | None:
    """The tenant id that ``key`` belongs to, or None if it is malformed, unknown or revoked."""
    if not looks_like_key(key):
        return None
    with db.read() as conn:
        found = lookup(conn, key)
    return settle_use(db, found, now)


def lookup(conn: Connection, key: str) -> tuple[str, str, float | None] | None:
    """``(key id, tenant id, last used)`` of a live key, read in the caller's transaction."""
    if not looks_like_key(key):
        return None
    digest = _hash(key)
    row = conn.execute(sa.select(api_keys.c.id, api_keys.c.tenant_id, api_keys.c.hash,
                                 api_keys.c.last_used_at, api_keys.c.revoked_at)
                       .where(api_keys.c.hash == digest)).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.hash, digest):
        return None
    return str(row.id), str(row.tenant_id), row.last_used_at


def settle_use(db: Database, found: tuple[str, str, float | None] | None,
               now: float | None = None) -> str | None:
    """The tenant of a key :func:`lookup` found, noting its use (at most once a minute)."""
    if found is None:
        return None
    key_id, tenant, last_used = found
    now = time.time() if now is None else now
    if last_used is None or now - last_used >= TOUCH_EVERY:
        _touch(db, key_id, now)
    return tenant


def _touch(db: Database, key_id: str, now: float) -> None:
    # Conditional, so that concurrent requests on one key write it once between them.
    stale = sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= now - TOUCH_EVERY)
    with db.write() as conn:
        conn.execute(api_keys.update().where(api_keys.c.id == key_id, stale)
                     .values(last_used_at=now))


def list_keys(db: Database, tenant: str | None = None) -> list[dict[str, Any]]:
    """Every key (revoked ones too), oldest first: id, tenant, name, prefix and times."""
    query = sa.select(*_KEY_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
    if tenant is not None:
        query = query.where(api_keys.c.tenant_id == tenant)
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def revoke_key(db: Database, key_id: str, *, tenant: str | None = None) -> bool:
    """Revoke a key for good; False if there is no such key (of ``tenant``, when given).

    Revoking a revoked key is True and keeps the first ``revoked_at``.
    """
    where = [api_keys.c.id == key_id]
    if tenant is not None:
        where.append(api_keys.c.tenant_id == tenant)
    with db.write() as conn:
        if conn.execute(sa.select(api_keys.c.id).where(*where)).first() is None:
            return False
        conn.execute(api_keys.update().where(*where, api_keys.c.revoked_at.is_(None))
                     .values(revoked_at=time.time()))
    return True


# --- tenants -----------------------------------------------------------------------------


def get_tenant(db: Database, tenant_id: str) -> dict[str, Any] | None:
    """id, name, daily_budget_usd, monthly_budget_usd and created_at; never the secret."""
    with db.read() as conn:
        row = conn.execute(sa.select(*_TENANT_COLUMNS).where(tenants.c.id == tenant_id)).first()
    return None if row is None else dict(row._mapping)


def webhook_secret(db: Database, tenant_id: str) -> str:
    """The tenant's webhook signing secret (``whsec_...``); UserError if no such tenant."""
    with db.read() as conn:
        return _secret_of(conn, tenant_id)


def _check_budget(label: str, value: Decimal | None) -> None:
    if value is not None and not (value.is_finite() and 0 <= value <= MAX_BUDGET):
        raise UserError(f"the {label} budget must be a number of USD from 0 to {MAX_BUDGET:,}, "
                        f"not {value}")


def set_budget(db: Database, tenant_id: str, *, daily: Decimal | None,
               monthly: Decimal | None) -> None:
    """Set both of a tenant's spending caps in USD; None removes a cap."""
    _check_budget("daily", daily)
    _check_budget("monthly", monthly)
    with db.write() as conn:
        done = conn.execute(tenants.update().where(tenants.c.id == tenant_id)
                            .values(daily_budget_usd=daily, monthly_budget_usd=monthly))
        if not done.rowcount:
            raise UserError(f"no tenant {tenant_id!r}: `shotline tenants list` shows them")


def list_tenants(db: Database) -> list[dict[str, Any]]:
    """Every tenant, oldest first, as :func:`get_tenant` plus ``active_keys``."""
    active = sa.func.count(sa.case((api_keys.c.revoked_at.is_(None), api_keys.c.id)))
    query = (sa.select(*_TENANT_COLUMNS, active.label("active_keys"))
             .select_from(tenants.outerjoin(api_keys, api_keys.c.tenant_id == tenants.c.id))
             .group_by(*_TENANT_COLUMNS).order_by(tenants.c.created_at, tenants.c.id))
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
