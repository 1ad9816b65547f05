"""Budgets hold end to end: concurrent CLI renders and API requests, and billed failures.

Each scenario runs on SQLite and on Postgres, with real `shotline` processes or a real
server on a socket, and checks the ledger against the caps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from shotline.providers.local import read_journal
from shotline.store import ledger
from shotline.store.db import Database

from .conftest import pg_schema
from .service import running, service_settings

pytestmark = pytest.mark.slow

ROUNDS = 20
# local/sim bills $0.10 a second. The races render one-second clips at a small size (an
# override, as a user would add one), so 8 processes x 20 rounds x 2 databases stay quick:
# each render is $0.10, and $0.25 fits two of them.
SMALL = """
[models."local/sim"]
reason = "small, short clips keep the race tests quick"
expires = 2099-01-01
durations = [1, 4, 6, 8]
sizes = ["320x180", "640x360"]
"""
CAP = "0.25"
BILLED_FAILURES = """
[models."local/sim"]
reason = "a model that bills failed attempts, as six real ones do"
expires = 2099-01-01
billed_on_failure = true
"""


@contextmanager
def database(kind: str, home: Path) -> Iterator[str]:
    """A fresh database of ``kind`` for one round."""
    if kind == "postgres":
        with pg_schema() as url:
            yield url
    else:
        home.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{home / 'shotline.db'}"


def cli(home: Path, url: str, brief: str, *args: str, **env: str) -> subprocess.Popen[str]:
    environ = {**os.environ, "SHOTLINE_HOME": str(home), "SHOTLINE_DATABASE_URL": url,
               "SHOTLINE_POLL_INTERVAL": "0.05", "SHOTLINE_BACKOFF_BASE": "0.01", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shotline", "render", "-", "--model", "local/sim", "--seconds",
         "4", "--size", "640x360", "--json", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environ)
    assert proc.stdin is not None
    proc.stdin.write(brief)
    proc.stdin.close()
    proc.stdin = None  # written and closed: communicate() must not flush it again
    return proc


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        _, err = p.communicate(timeout=240)
        results.append((p.returncode, err))
    return results


def spent(url: str) -> Decimal:
    db = Database(url)
    try:
        return sum((r["amount"] for r in ledger.rows(db)), Decimal(0))
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.timeout(900)
def test_concurrent_cli_renders_take_only_what_fits(tmp_path: Path, kind: str) -> None:
    overrides = tmp_path / "overrides.toml"
    overrides.write_text(SMALL)
    for n in range(ROUNDS):
        home = tmp_path / f"round{n}"
        with database(kind, home) as url:
            Database(url).close()  # migrated once, as an installed database would be
            procs = [cli(home, url, f"Shot 1: Kite number {i} of round {n} rises.\n",
                         "--seconds", "1", "--size", "320x180", SHOTLINE_DAILY_BUDGET_USD=CAP,
                         SHOTLINE_OVERRIDES=str(overrides)) for i in range(8)]
            results = finish(procs)
            codes = [code for code, _ in results]
            assert codes.count(0) == 2 and codes.count(3) == 6, results
            assert all("daily budget" in err for code, err in results if code == 3)
            assert spent(url) == Decimal("0.20")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.timeout(600)
def test_concurrent_posts_take_only_what_fits(tmp_path: Path, kind: str) -> None:
    with database(kind, tmp_path / "h") as url:
        # No worker: accepted renders stay queued (and reserved) until cancelled below.
        # Each render is a 4 s shot, $0.40: $1.00 fits two.
        settings = service_settings(tmp_path / "h", database_url=url, model="local/sim",
                                    daily_budget_usd=Decimal("1.00"))
        with running(settings, with_worker=False) as server:
            api = server.client(server.new_key().key)

            def post(i: int, n: int) -> httpx.Response:
                return api.post("/v1/renders", json={
                    "brief": f"Shot 1: Kite {i} of round {n}.", "seconds": 4, "size": "640x360"})

            with ThreadPoolExecutor(8) as pool:
                for n in range(ROUNDS):
                    answers = list(pool.map(post, range(8), [n] * 8))
                    codes = sorted(a.status_code for a in answers)
                    assert codes == [202] * 2 + [402] * 6, [a.text for a in answers]
                    assert all("daily budget" in a.json()["error"]["message"]
                               for a in answers if a.status_code == 402)
                    for a in answers:  # free the budget for the next round
                        if a.status_code == 202:
                            assert api.post(f"/v1/renders/{a.json()['id']}/cancel").is_success
        assert spent(url) == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("max_usd, daily", [("1.00", "5.00"), ("9.00", "2.00")])
def test_billed_failures_stop_at_every_cap(tmp_path: Path, kind: str, max_usd: str,
                                           daily: str) -> None:
    """Every attempt fails and is billed ($0.40 each): a retry is made only while the
    caps cover it and one more try at every shot still open."""
    home = tmp_path / "h"
    home.mkdir()
    (home / "overrides.toml").write_text(BILLED_FAILURES)
    with database(kind, home) as url:
        brief = "Shot 1: A kite rises.\n\nShot 2: The kite falls.\n"
        proc = cli(home, url, brief, "--seconds", "8", "--max-usd", max_usd,
                   SHOTLINE_LOCAL_FAULTS="*:fail", SHOTLINE_DAILY_BUDGET_USD=daily)
        ((code, err),) = finish([proc])
        assert code == 3, err
        assert "stopped before an attempt that could be billed" in err
        total = spent(url)
        assert Decimal("0.80") <= total <= min(Decimal(max_usd), Decimal(daily))
        journal = read_journal(home / "local" / "journal.jsonl", accepted_only=True)
        assert len(journal) == total / Decimal("0.40")  # every attempt made was billed once


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.timeout(240)
def test_processes_rendering_one_brief_submit_once_per_shot(tmp_path: Path, kind: str) -> None:
    home = tmp_path / "h"
    with database(kind, home) as url:
        Database(url).close()
        brief = "Shot 1: A red kite.\n\nShot 2: A blue kite.\n\nShot 3: Both kites.\n"
        procs = [cli(home, url, brief, "--seconds", "12", SHOTLINE_LOCAL_LATENCY="1")
                 for _ in range(4)]
        results = finish(procs)
        assert [code for code, _ in results] == [0] * 4, results
        journal = read_journal(home / "local" / "journal.jsonl", accepted_only=True)
        assert len(journal) == 3 and len({j["job_id"] for j in journal}) == 3
        db = Database(url)
        rows: list[dict[str, Any]] = ledger.rows(db)
        db.close()
        assert sorted(r["provider_job_id"] for r in rows) == sorted(j["job_id"] for j in journal)
        assert spent(url) == Decimal("1.20")


