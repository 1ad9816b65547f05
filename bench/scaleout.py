"""Scale-out throughput: the same 20 renders with one Celery worker process, then two.

Each run is a whole deployment on this machine: `shotline serve` (only enqueuing), N
`shotline worker --concurrency 1` processes with empty homes of their own, Postgres (a
fresh schema), Redis (a fresh key prefix, deleted afterwards), an S3-compatible store
(moto's server mode, a fresh bucket) and the `local` vendor on a shared directory with a
per-job latency standing in for a vendor's minutes. Printed side by side: wall time and
renders per minute for 1 and 2 workers, their ratio, and the median time a render waited
queued (from its POST to its `rendering` event).

    .venv/bin/python bench/scaleout.py [--renders 20] [--latency 5]

Needs Postgres (SHOTLINE_TEST_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1/test)
and Redis (SHOTLINE_TEST_REDIS_URL, default redis://127.0.0.1:6379/0): scripts/services.sh.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import boto3
import httpx
import redis
import sqlalchemy as sa

from shotline.api import open_store
from shotline.service import tenants
from shotline.settings import Settings
from shotline.store.db import render_events, renders

PG = os.environ.get("SHOTLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SHOTLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@contextmanager
def _schema() -> Iterator[str]:
    admin = sa.create_engine(PG)
    name = "bench_" + uuid.uuid4().hex[:10]
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        yield sa.make_url(PG).update_query_dict({"options": f"-csearch_path={name}"}) \
            .render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def run(workers: int, n: int, latency: float, endpoint: str, tmp: Path) -> dict[str, float]:
    """One deployment with ``workers`` worker processes; its wall time and queue waits."""
    work = tmp / f"w{workers}"
    work.mkdir()
    bucket = "bench-" + uuid.uuid4().hex[:10]
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    prefix = f"shotline-bench-{uuid.uuid4().hex[:8]}:"
    with ExitStack() as stack:
        db_url = stack.enter_context(_schema())
        env = {**AWS, "SHOTLINE_QUEUE": "celery", "SHOTLINE_BROKER_URL": REDIS,
               "SHOTLINE_BROKER_PREFIX": prefix, "SHOTLINE_DATABASE_URL": db_url,
               "SHOTLINE_STORAGE": f"s3://{bucket}/media", "SHOTLINE_S3_ENDPOINT_URL": endpoint,
               "SHOTLINE_LOCAL_DIR": str(work / "vendor"), "SHOTLINE_LOCAL_LATENCY": str(latency),
               "SHOTLINE_CONCURRENCY": "100", "SHOTLINE_POLL_INTERVAL": "1"}
        settings = Settings(home=work / "operator", queue="celery", broker_url=REDIS,
                            broker_prefix=prefix, database_url=db_url,
                            storage=f"s3://{bucket}/media", s3_endpoint_url=endpoint)
        db, _ = open_store(settings)
        key = tenants.create_key(db, "bench").key
        port = _port()
        stack.enter_context(_process(
            [sys.executable, "-m", "shotline", "serve", "--port", str(port)],
            {**env, "SHOTLINE_HOME": str(work / "api")}, work / "api.log"))
        for i in range(workers):
            log = work / f"worker{i}.log"
            stack.enter_context(_process(
                [sys.executable, "-m", "shotline", "worker", "--concurrency", "1"],
                {**env, "SHOTLINE_HOME": str(work / f"worker{i}")}, log))
            _wait(lambda log=log: b" ready." in log.read_bytes(), 60, f"worker {i}")
        _wait(lambda: _listening(port), 30, "the API")
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                           headers={"Authorization": f"Bearer {key}"})
        started = time.monotonic()
        ids = [api.post("/v1/renders", json={
            "brief": f"Shot 1: Kite {i} climbs.\n\nShot 2: Kite {i} dives.", "seconds": 8,
            "size": "640x360", "model": "local/sim"}).json()["id"] for i in range(n)]
        done: set[str] = set()
        while len(done) < n:
            for rid in set(ids) - done:
                status = api.get(f"/v1/renders/{rid}").json()["status"]
                if status in ("failed", "cancelled"):
                    raise SystemExit(f"render {rid} {status}: see {work}")
                if status == "awaiting_review":
                    done.add(rid)
            time.sleep(0.2)
        wall = time.monotonic() - started
        api.close()
        with db.read() as conn:
            created = dict(conn.execute(sa.select(renders.c.id, renders.c.created_at)).all())
            began: dict[str, float] = {}
            for row in conn.execute(sa.select(render_events).where(render_events.c.type == "status")
                                    .order_by(render_events.c.id)):
                if row.data.get("status") == "rendering":
                    began.setdefault(row.render_id, row.created_at)
        db.close()
        queued = [began[r] - created[r] for r in ids]
    client = redis.Redis.from_url(REDIS)
    for k in client.scan_iter(match=prefix + "*", count=500):
        client.delete(k)
    return {"wall": wall, "per_min": n / wall * 60, "queued": statistics.median(queued),
            "queued_max": max(queued)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--latency", type=float, default=5.0)
    args = parser.parse_args()
    os.environ.update(AWS)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = _port()
        with _process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                      {}, tmp / "moto.log"):
            _wait(lambda: _listening(port), 30, "moto")
            endpoint = f"http://127.0.0.1:{port}"
            results = {w: run(w, args.renders, args.latency, endpoint, tmp) for w in (1, 2)}
    print(f"{args.renders} renders (2 shots of 4 s at 640x360 each), vendor latency "
          f"{args.latency:g} s, one task at a time per worker process, {os.cpu_count()} CPUs")
    print(f"{'workers':>8} {'wall s':>8} {'renders/min':>12} {'median queued s':>16} "
          f"{'max queued s':>13}")
    for w, r in results.items():
        print(f"{w:>8} {r['wall']:>8.1f} {r['per_min']:>12.1f} {r['queued']:>16.2f} "
              f"{r['queued_max']:>13.2f}")
    print(f"throughput ratio, 2 workers / 1 worker: {results[2]['per_min'] / results[1]['per_min']:.2f}x")


if __name__ == "__main__":
    main()
