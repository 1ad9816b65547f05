"""The singleflight claim, case by case, on SQLite and on Postgres (races: test_races.py)."""

from __future__ import annotations

import socket

import sqlalchemy as sa

from shotline.store import calls
from shotline.store.db import Database
from shotline.store.db import calls as calls_table

KEY = "sha256:" + "a" * 64
T = 1_000_000.0


def claim(db: Database, owner: str, now: float = T) -> calls.Claim:
    with db.write() as conn:
        return calls.claim(conn, KEY, "local", "sim", owner, now=now)


def state(db: Database) -> tuple[str, int]:
    with db.read() as conn:
        row = conn.execute(sa.select(calls_table.c.state, calls_table.c.attempts)).one()
    return row.state, row.attempts


def test_the_first_claim_leads_and_the_same_owner_retries(any_db: Database) -> None:
    assert claim(any_db, "elsewhere:1:a") == calls.Claim("lead", attempts=1)
    assert claim(any_db, "elsewhere:1:a") == calls.Claim("lead", attempts=2)
    assert state(any_db) == ("submitting", 2)


def test_a_live_claim_elsewhere_is_waited_for_and_a_stale_one_reconciled(any_db: Database) -> None:
    claim(any_db, "elsewhere:1:a")
    assert claim(any_db, "elsewhere:2:b", now=T + 1).action == "wait"
    # Another host's claim is stale once its heartbeat is a lease old: nobody knows whether
    # the submit reached the vendor, so the new owner must ask the vendor, not resubmit.
    assert claim(any_db, "elsewhere:2:b", now=T + calls.LEASE_SECONDS + 1).action == "reconcile"
    assert state(any_db) == ("submitting", 1)


def test_a_dead_process_on_this_host_is_reconciled_at_once(any_db: Database) -> None:
    claim(any_db, f"{socket.gethostname()}:999999999:dead")  # no such pid
    assert claim(any_db, "elsewhere:2:b", now=T + 1).action == "reconcile"


def test_submitted_is_followed_done_is_served_failed_is_claimed_anew(any_db: Database) -> None:
    claim(any_db, "elsewhere:1:a")
    calls.set_call(any_db, KEY, "submitted", job={"job_id": "j1"})
    assert claim(any_db, "elsewhere:2:b") == calls.Claim("follow", {"job_id": "j1"}, 1)
    calls.set_call(any_db, KEY, "failed", error="vendor said no", job=None)
    assert claim(any_db, "elsewhere:2:b") == calls.Claim("lead", attempts=2)
    calls.set_call(any_db, KEY, "done", job={"job_id": "j2"})
    assert claim(any_db, "elsewhere:3:c") == calls.Claim("done", {"job_id": "j2"}, 2)
