from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from shotline.errors import IdempotencyConflict, IdempotencyMismatch, ShotlineError, UserError
from shotline.service import idempotency
from shotline.service.idempotency import Replay, abandon, begin, complete, fingerprint, prune
from shotline.store.db import Database, idempotency_keys

FP = fingerprint("POST", "/v1/jobs", b'{"brief": "A gull.", "seconds": 5}')
OTHER = fingerprint("POST", "/v1/jobs", b'{"brief": "A boat.", "seconds": 5}')


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'idem.db'}")
    yield database
    database.close()


def claim(db: Database, key: str = "k-1", fp: str = FP, tenant: str = "t_a",
          **kw: float) -> Replay | None:
    with db.write() as conn:
        return begin(conn, tenant, key, fp, **kw)


def finish(db: Database, key: str = "k-1", tenant: str = "t_a", body: str = '{"id": "r_1"}') -> None:
    with db.write() as conn:
        complete(conn, tenant, key, 201, body)


def test_fingerprint_ignores_json_key_order_and_spacing() -> None:
    assert fingerprint("post", "/v1/jobs", b'{ "seconds":5,\n "brief":"A gull." }') == FP
    assert FP.startswith("sha256:") and len(FP) == 71
    assert FP != OTHER
    assert fingerprint("PUT", "/v1/jobs", b'{"brief": "A gull.", "seconds": 5}') != FP
    assert fingerprint("POST", "/v1/other", b'{"brief": "A gull.", "seconds": 5}') != FP
    assert fingerprint("POST", "/x", b"not json") == fingerprint("POST", "/x", b"not json")
    assert fingerprint("POST", "/x", b"not json") != fingerprint("POST", "/x", b"not json ")
    assert fingerprint("POST", "/x", b"") != fingerprint("POST", "/x", b"{}")
    assert fingerprint("POST", "/x", b"\xff\xfe") != fingerprint("POST", "/x", b"\xfe\xff")
    assert fingerprint("POST", "/x", b'"\\ud800"').startswith("sha256:")


def test_first_use_owns_the_key_and_a_retry_gets_the_saved_answer(any_db: Database) -> None:
    assert claim(any_db) is None
    finish(any_db)
    assert claim(any_db) == Replay(201, '{"id": "r_1"}')
    assert claim(any_db) == Replay(201, '{"id": "r_1"}')


def test_same_key_for_another_request_is_422(db: Database) -> None:
    claim(db)
    finish(db)
    with pytest.raises(IdempotencyMismatch, match="different request") as caught:
        claim(db, fp=OTHER)
    assert caught.value.http_status == 422 and isinstance(caught.value, UserError)


def test_a_key_still_in_progress_is_409(db: Database) -> None:
    claim(db)
    with pytest.raises(IdempotencyConflict, match="still in progress.*retry") as caught:
        claim(db)
    assert caught.value.http_status == 409 and not isinstance(caught.value, UserError)
    with pytest.raises(IdempotencyMismatch):  # another request is refused even while in progress
        claim(db, fp=OTHER)


def test_keys_are_per_tenant(db: Database) -> None:
    assert claim(db, tenant="t_a") is None
    assert claim(db, tenant="t_b", fp=OTHER) is None


def test_an_expired_key_starts_anew(any_db: Database) -> None:
    assert claim(any_db, now=1000.0) is None
    finish(any_db)
    assert claim(any_db, now=1000.0 + 3600, ttl=7200) == Replay(201, '{"id": "r_1"}')
    assert claim(any_db, fp=OTHER, now=1000.0 + 7201, ttl=7200) is None
    with pytest.raises(IdempotencyConflict):
        claim(any_db, fp=OTHER, now=1000.0 + 7202, ttl=7200)


def test_abandon_frees_the_key_but_not_a_saved_answer(db: Database) -> None:
    claim(db)
    with db.write() as conn:
        abandon(conn, "t_a", "k-1")
    assert claim(db, fp=OTHER) is None
    finish(db)
    with db.write() as conn:
        abandon(conn, "t_a", "k-1")
    assert claim(db, fp=OTHER) == Replay(201, '{"id": "r_1"}')


def test_complete_without_a_claim_rolls_back_the_work(db: Database) -> None:
    claim(db)
    with db.write() as conn:
        abandon(conn, "t_a", "k-1")
    with pytest.raises(IdempotencyConflict, match="lost"), db.write() as conn:
        conn.execute(idempotency_keys.insert().values(
            tenant_id="t_work", key="w", fingerprint="x", state="done", created_at=0))
        complete(conn, "t_a", "k-1", 201, "{}")
    with db.read() as conn:
        assert conn.execute(sa.select(idempotency_keys)).all() == []


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "a\nb", "tab\t"])
def test_bad_keys_are_refused_and_nothing_is_written(db: Database, key: str) -> None:
    with pytest.raises(UserError, match="1 to 255 printable ASCII"):
        claim(db, key=key)
    with db.read() as conn:
        assert conn.execute(sa.select(idempotency_keys)).all() == []
    assert claim(db, key="x" * 255) is None


def test_prune_removes_old_keys(db: Database) -> None:
    claim(db, key="old", now=100.0)
    claim(db, key="new", now=200.0)
    assert prune(db, 50, now=220.0) == 1
    with db.read() as conn:
        assert conn.execute(sa.select(idempotency_keys.c.key)).scalars().all() == ["new"]


THREADS = 20


def race(db: Database, tenant: str) -> list[object]:
    """THREADS requests with one key and one body, released at once."""
    barrier = threading.Barrier(THREADS, timeout=30)

    def attempt(_: int) -> object:
        barrier.wait()
        try:
            with db.write() as conn:
                claimed = begin(conn, tenant, "same-key", FP)
                time.sleep(0.01)  # hold the claim uncommitted, so that claims overlap
        except IdempotencyConflict:
            return "conflict"
        if claimed is None:
            finish(db, "same-key", tenant)
            return "owner"
        return claimed

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(attempt, range(THREADS)))


def check_race(results: list[object]) -> None:
    assert results.count("owner") == 1, results
    others = [r for r in results if r != "owner"]
    assert all(r in ("conflict", Replay(201, '{"id": "r_1"}')) for r in others), others


def test_concurrent_claims_have_one_owner(any_db: Database) -> None:
    for _ in range(3):  # several rounds: a lucky interleaving must not pass the test alone
        tenant = "t_" + uuid.uuid4().hex[:16]
        check_race(race(any_db, tenant))
        assert claim(any_db, key="same-key", tenant=tenant) == Replay(201, '{"id": "r_1"}')


def test_errors_are_in_the_one_tree() -> None:
    assert issubclass(IdempotencyConflict, ShotlineError)
    assert issubclass(IdempotencyMismatch, UserError)


def test_a_claim_left_by_a_dead_request_is_taken_over_after_a_while(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'stale.db'}")
    with db.write() as conn:
        assert idempotency.begin(conn, "t_1", "k", "fp", now=1000) is None
    with pytest.raises(IdempotencyConflict), db.write() as conn:
        idempotency.begin(conn, "t_1", "k", "fp", now=1000 + idempotency.STALE_AFTER - 1)
    with db.write() as conn:
        assert idempotency.begin(conn, "t_1", "k", "fp", now=1000 + idempotency.STALE_AFTER) is None
    db.close()
