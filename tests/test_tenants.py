from __future__ import annotations

import hashlib
import re
import string
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from shotline.errors import UserError
from shotline.service.tenants import (
    authenticate,
    create_key,
    get_tenant,
    list_keys,
    list_tenants,
    looks_like_key,
    revoke_key,
    set_budget,
    webhook_secret,
)
from shotline.store.db import Database

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.for_home(tmp_path / "db")
    yield database
    database.close()


def base62_crc(random_part: str) -> str:
    """The checksum as a secret scanner would compute it, written apart from the package."""
    n, out = zlib.crc32(random_part.encode()), ""
    for _ in range(6):
        n, r = divmod(n, 62)
        out = BASE62[r] + out
    return out


def test_key_format_is_prefix_random_and_checksum(db: Database) -> None:
    key = create_key(db, "acme").key
    assert re.fullmatch(r"sl_live_[0-9A-Za-z]{38}", key) and len(key) == 46
    assert key[-6:] == base62_crc(key[8:40])
    assert looks_like_key(key)
    assert looks_like_key("sl_live_" + "0" * 32 + base62_crc("0" * 32))


def test_any_one_character_change_fails_the_checksum(db: Database) -> None:
    key = create_key(db, "acme").key
    for i in range(len(key)):
        other = BASE62[(BASE62.index(key[i]) + 1) % 62] if key[i] in BASE62 else "x"
        assert not looks_like_key(key[:i] + other + key[i + 1:]), i


def test_create_authenticate_revoke(db: Database) -> None:
    made = create_key(db, "Acme Films")
    assert made.tenant.startswith("t_") and len(made.tenant) == 18
    assert made.webhook_secret.startswith("whsec_")
    assert authenticate(db, made.key) == made.tenant
    assert revoke_key(db, made.key_id) is True
    assert authenticate(db, made.key) is None
    assert revoke_key(db, made.key_id) is True  # again: still revoked, first time kept
    assert list_keys(db)[0]["revoked_at"] is not None
    assert revoke_key(db, "key_nope") is False


def test_a_second_key_for_the_same_tenant(db: Database) -> None:
    first = create_key(db, "acme")
    second = create_key(db, "ci runner", tenant=first.tenant)
    assert second.tenant == first.tenant and second.key != first.key
    assert second.webhook_secret == first.webhook_secret == webhook_secret(db, first.tenant)
    assert authenticate(db, second.key) == first.tenant
    assert revoke_key(db, second.key_id, tenant="t_someone_else") is False
    revoke_key(db, second.key_id, tenant=first.tenant)
    assert authenticate(db, second.key) is None and authenticate(db, first.key) == first.tenant
    assert [k["name"] for k in list_keys(db, first.tenant)] == ["acme", "ci runner"]
    assert [t["active_keys"] for t in list_tenants(db)] == [1]


def test_a_key_for_an_unknown_tenant_writes_nothing(db: Database) -> None:
    with pytest.raises(UserError, match="no tenant 't_nope'"):
        create_key(db, "x", tenant="t_nope")
    assert list_keys(db) == [] and list_tenants(db) == []


def test_keys_are_stored_only_as_hashes(db: Database, tmp_path: Path) -> None:
    made = create_key(db, "acme")
    assert authenticate(db, made.key) == made.tenant
    stored = b"".join(p.read_bytes() for p in (tmp_path / "db").glob("shotline.db*"))
    assert hashlib.sha256(made.key.encode()).hexdigest().encode() in stored  # the right files
    assert made.key.encode() not in stored and made.key[8:40].encode() not in stored
    listed = list_keys(db)
    assert set(listed[0]) == {"id", "tenant", "name", "prefix", "created_at", "last_used_at",
                              "revoked_at"}
    assert listed[0]["prefix"] == made.key[:12]


def test_secrets_stay_out_of_reprs_and_tenant_rows(db: Database) -> None:
    made = create_key(db, "acme")
    assert made.key not in repr(made) and made.webhook_secret not in repr(made)
    assert made.key_id in repr(made)
    tenant = get_tenant(db, made.tenant)
    assert tenant is not None and made.webhook_secret not in str(tenant)
    assert made.webhook_secret not in str(list_tenants(db))


@pytest.mark.parametrize("garbage", [
    "", "garbage", "Bearer x", "sl_live_", "sl_test_" + "a" * 38, "sl_live_" + "a" * 37,
    "sl_live_" + "a" * 39, "sl_live_" + "٣" * 38, "sl_live_" + "a" * 32 + "000000",
])
def test_garbage_is_refused_without_a_query(db: Database, garbage: str) -> None:
    create_key(db, "acme")
    queries: list[str] = []

    def count(*args: Any) -> None:
        queries.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    assert not looks_like_key(garbage)
    assert authenticate(db, garbage) is None
    assert queries == []


def test_a_well_formed_unknown_key_is_refused(db: Database) -> None:
    create_key(db, "acme")
    random_part = "Z" * 32
    assert authenticate(db, "sl_live_" + random_part + base62_crc(random_part)) is None


@pytest.mark.parametrize("name", ["", "x" * 201, "a\nb", "tab\there", "   ", "nul\x00"])
def test_bad_names_change_nothing(db: Database, name: str) -> None:
    with pytest.raises(UserError, match="name must be"):
        create_key(db, name)
    assert list_tenants(db) == [] and list_keys(db) == []


def test_last_used_at_is_written_at_most_once_a_minute(db: Database) -> None:
    made = create_key(db, "acme")
    assert list_keys(db)[0]["last_used_at"] is None
    for now, expected in ((1000.0, 1000.0), (1030.0, 1000.0), (1059.0, 1000.0), (1061.0, 1061.0)):
        assert authenticate(db, made.key, now=now) == made.tenant
        assert list_keys(db)[0]["last_used_at"] == expected


def test_budgets(db: Database) -> None:
    made = create_key(db, "acme")
    tenant = get_tenant(db, made.tenant)
    assert tenant is not None and tenant["name"] == "acme"
    assert tenant["daily_budget_usd"] is None and tenant["monthly_budget_usd"] is None
    set_budget(db, made.tenant, daily=Decimal("12.5"), monthly=Decimal(300))
    tenant = get_tenant(db, made.tenant)
    assert tenant is not None
    assert (tenant["daily_budget_usd"], tenant["monthly_budget_usd"]) == (Decimal("12.5"), 300)
    set_budget(db, made.tenant, daily=None, monthly=Decimal(300))
    assert list_tenants(db)[0]["daily_budget_usd"] is None
    for bad in (Decimal(-1), Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(UserError, match="daily budget"):
            set_budget(db, made.tenant, daily=bad, monthly=None)
    with pytest.raises(UserError, match="no tenant"):
        set_budget(db, "t_nope", daily=None, monthly=None)
    assert get_tenant(db, "t_nope") is None
    with pytest.raises(UserError, match="no tenant"):
        webhook_secret(db, "t_nope")
