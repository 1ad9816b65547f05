"""The scale-out deployment as users run it: `shotline serve` plus Celery workers as
separate processes, each with an empty home of its own, on Postgres, Redis and an
S3-compatible store (moto's server mode), with the `local` vendor on a shared directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from shotline.api import open_store
from shotline.providers.local import read_journal
from shotline.service import tenants
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.cache import still_name
from shotline.store.db import renders, reservations

from .scaleout import CREDENTIALS, S3, Broker, celery_worker, free_port, kill_worker, stack_env
from .service import queue_render, render_view, wait_until

pytestmark = pytest.mark.slow

LATENCY = 3.0
LIMIT = 6  # jobs in flight at the vendor, across both workers


def _settings(env: dict[str, str], home: Path) -> Settings:
    values = {k.removeprefix("SHOTLINE_").lower(): v for k, v in env.items()
              if k.startswith("SHOTLINE_")}
    return Settings(home=home, **values)


def _story(db: Any, views: list[dict[str, Any]]) -> str:
    """What the database knows about renders that did not finish (for a failure's message)."""
    from shotline.store import lifecycle
    from shotline.store.db import calls, render_shots

    lines = []
    with db.read() as conn:
        for view in views:
            lines.append(f"{view['id']} {view['status']}: "
                         f"{[(s['index'], s['state']) for s in view['shots']]}")
            keys = [r.key for r in conn.execute(sa.select(render_shots.c.key).where(
                render_shots.c.render_id == view["id"]))]
            lines += [f"  call {dict(r._mapping)}" for r in conn.execute(
                sa.select(calls).where(calls.c.key.in_(keys)))]
            lines += [f"  {e['created_at']:.2f} {e['type']} {e['data']}"
                      for e in lifecycle.events_after(conn, view["id"], 0)[-15:]]
    return "\n".join(lines)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.timeout(300)
def test_api_and_two_workers_finish_every_render_when_one_worker_is_killed(
        tmp_path: Path, pg_url: str, s3: S3, broker: Broker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = s3.new_bucket()
    env = stack_env(database_url=pg_url, broker=broker, s3=s3, bucket=bucket,
                    local_dir=tmp_path / "vendor", SHOTLINE_LOCAL_LATENCY=str(LATENCY),
                    SHOTLINE_CONCURRENCY=str(LIMIT), SHOTLINE_MEDIA_REDIRECT="1")
    settings = _settings(env, tmp_path / "operator")
    db, store = open_store(settings)
    key = tenants.create_key(db, "acme").key
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api_env = {**os.environ, **env, "SHOTLINE_HOME": str(tmp_path / "api")}
    with (tmp_path / "api.log").open("ab") as log:
        api = subprocess.Popen([sys.executable, "-m", "shotline", "serve", "--port", str(port)],
                               env=api_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with celery_worker(tmp_path / "w1", env, tmp_path / "w1.log") as first, \
                celery_worker(tmp_path / "w2", env, tmp_path / "w2.log"):
            wait_until(lambda: _up(url), 30, "the API")
            client = httpx.Client(base_url=url, timeout=30,
                                  headers={"Authorization": f"Bearer {key}"})
            ids = []
            for n in range(10):
                answer = client.post("/v1/renders", json={
                    "brief": f"Shot 1: Kite {n} climbs.\n\nShot 2: Kite {n} dives.",
                    "seconds": 8, "size": "640x360", "model": "local/sim"})
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["id"])
            # Kill one worker (pool and all) while jobs are in flight and renders unfinished.
            wait_until(lambda: len(read_journal(settings.journal_path)) >= 8, 90, "8 submits")
            kill_worker(first)
            views = {}
            deadline = time.monotonic() + 200
            while len(views) < len(ids):
                left = [client.get(f"/v1/renders/{rid}").json() for rid in set(ids) - set(views)]
                assert time.monotonic() < deadline, f"unfinished: {_story(db, left)}"
                for view in left:
                    rid = view["id"]
                    assert view["status"] not in ("failed", "cancelled"), view
                    if view["status"] == "awaiting_review":
                        views[rid] = view
                time.sleep(0.5)

            # Range through the URL the API gives: a redirect to a presigned URL of the store.
            output = views[ids[0]]["output_url"]
            whole = client.get(output, follow_redirects=True)
            part = client.get(output, headers={"Range": "bytes=100-199"}, follow_redirects=True)
            assert whole.status_code == 200 and len(whole.content) > 1000
            assert part.status_code == 206 and part.content == whole.content[100:200]
            assert str(part.url).startswith(s3.endpoint)  # served by the store, not the API
            poster = client.get(views[ids[0]]["poster_url"], follow_redirects=True)
            assert poster.status_code == 200 and poster.content[:3] == b"\xff\xd8\xff"
            client.close()
    finally:
        api.terminate()
        api.wait(20)

    journal = read_journal(settings.journal_path, accepted_only=True)
    assert len(journal) == 20 and len({j["key"] for j in journal}) == 20  # submits = shots
    rows = ledger.rows(db)
    assert sorted(r["provider_job_id"] for r in rows) == sorted(j["job_id"] for j in journal)
    assert sum((r["amount"] for r in rows), Decimal(0)) == Decimal("0.1") * 4 * 20
    # The provider's limit held across both workers: every job is in flight for at least
    # the vendor's latency, so no LIMIT + 1 submits fall within one latency of each other.
    times = sorted(datetime.fromisoformat(j["time"]).timestamp() for j in journal)
    assert all(b - a >= LATENCY - 0.05 for a, b in zip(times, times[LIMIT:], strict=False))
    keys = set(s3.keys(bucket))
    with db.read() as conn:
        outputs = [r.output for r in conn.execute(sa.select(renders.c.output))]
        assert Counter(r.state for r in conn.execute(sa.select(reservations.c.state))) == {
            "settled": 10}
    assert len(outputs) == 10
    for name in outputs:
        for obj in (name, still_name(name, "poster"), still_name(name, "contact")):
            assert f"media/{obj}" in keys
    # Nothing a later step needed stayed on a worker's disk only: the workers' homes hold
    # scratch files at most (no database, no store).
    for home in ("w1", "w2", "api"):
        found = {p.name for p in (tmp_path / home).rglob("*") if p.is_file()}
        assert not {"shotline.db"} & found and not (tmp_path / home / "store").exists()
    assert store.stored([j["key"] for j in journal]) == {j["key"] for j in journal}
    db.close()


def test_a_bad_deployment_is_one_clear_error_when_a_process_starts(
        tmp_path: Path, pg_url: str, s3: S3, broker: Broker) -> None:
    good = stack_env(database_url=pg_url, broker=broker, s3=s3, bucket=s3.new_bucket(),
                     local_dir=tmp_path / "vendor")
    dead = f"127.0.0.1:{free_port()}"
    cases = [
        ({"SHOTLINE_BROKER_URL": f"redis://:hunter2@{dead}/0"}, "worker",
         f"cannot reach the task queue's broker at redis://:***@{dead}/0"),
        ({"SHOTLINE_BROKER_URL": ""}, "serve", "SHOTLINE_QUEUE=celery needs SHOTLINE_BROKER_URL"),
        ({"SHOTLINE_DATABASE_URL": f"postgresql+psycopg://me:hunter2@{dead}/x"}, "worker",
         f"cannot open the database at postgresql+psycopg://me:***@{dead}/x"),
        ({"SHOTLINE_STORAGE": "s3://no-such-bucket-here/x"}, "serve",
         "bucket 'no-such-bucket-here' at http://127.0.0.1"),
        ({"SHOTLINE_S3_ENDPOINT_URL": f"http://{dead}"}, "worker", "cannot reach bucket"),
        ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, "worker",
         "no credentials for bucket"),
        ({"SHOTLINE_STORAGE": "gs://somewhere"}, "serve", "is not s3://BUCKET/PREFIX"),
    ]
    for change, command, words in cases:
        env = {**os.environ, **good, **change, "SHOTLINE_HOME": str(tmp_path / "h"),
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        env = {k: v for k, v in env.items() if v != "" or k not in change}
        done = subprocess.run([sys.executable, "-m", "shotline", command], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (change, done.stderr)
        assert words in done.stderr, (change, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert lines and lines[0].startswith("error:") and "Traceback" not in done.stderr
        assert "hunter2" not in done.stderr


def test_renders_whose_messages_were_lost_are_requeued_and_paid_once(
        tmp_path: Path, pg_url: str, s3: S3, broker: Broker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    env = stack_env(database_url=pg_url, broker=broker, s3=s3, bucket=s3.new_bucket(),
                    local_dir=tmp_path / "vendor", SHOTLINE_VISIBILITY_TIMEOUT="6")
    settings = _settings(env, tmp_path / "api")
    db, _ = open_store(settings)
    tenant = tenants.create_key(db, "acme").tenant
    db.close()
    by_hand, by_watchdog = (queue_render(settings, tenant, seed=n) for n in (1, 2))
    assert broker.keys()  # their start tasks wait in Redis...
    for key in broker.keys():  # ...and are lost, as in a Redis flushed with no worker up
        redis.Redis.from_url(broker.url).delete(key)
    cli_env = {**os.environ, **env, "SHOTLINE_HOME": str(tmp_path / "cli")}
    done = subprocess.run([sys.executable, "-m", "shotline", "requeue", by_hand, "--json"],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # The other is found by the workers' watchdog: silent for two visibility timeouts.
    with celery_worker(tmp_path / "w", env, tmp_path / "w.log"):
        for render_id in (by_hand, by_watchdog):
            wait_until(lambda r=render_id: render_view(settings, r)["status"] == "awaiting_review",
                       90, f"the requeued render {render_id}")
    assert f"render {by_watchdog} made no progress" in (tmp_path / "w.log").read_text()
    assert len(read_journal(settings.journal_path)) == 4  # two shots each, once
    # A render that is over cannot be requeued; the answer says which can.
    again = subprocess.run([sys.executable, "-m", "shotline", "requeue", by_hand],
                           env=cli_env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "only a service render that is queued" in again.stderr
