"""The scale-out stack for tests: an S3-compatible server (moto's server mode) on loopback,
the machine's Redis (a key prefix of each test's own, deleted afterwards), Postgres (a
schema of each test's own) and Celery workers as separate processes.

Nothing here skips: a Redis that cannot be reached fails the test with what to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

REDIS_URL = os.environ.get("SHOTLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Never ask a cloud's metadata address for credentials: the tests talk to loopback only.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "shotline-test", "AWS_SECRET_ACCESS_KEY": "shotline-test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint,
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            region_name=CREDENTIALS["AWS_DEFAULT_REGION"])

    def new_bucket(self) -> str:
        name = "shotline-" + uuid.uuid4().hex[:12]
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextmanager
def s3_server(log: Path) -> Iterator[S3]:
    """moto's S3-compatible server on 127.0.0.1 and a free port, for as long as the block."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, f"moto server exited: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        yield S3(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass(frozen=True)
class Broker:
    url: str
    prefix: str

    def keys(self) -> list[bytes]:
        return list(redis.Redis.from_url(self.url).scan_iter(match=self.prefix + "*"))


@contextmanager
def redis_broker() -> Iterator[Broker]:
    """The machine's Redis, with a key prefix of this test's own, deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"no Redis at {REDIS_URL} ({exc}): start it (scripts/services.sh does) "
                    "or point SHOTLINE_TEST_REDIS_URL at one")
    broker = Broker(REDIS_URL, f"shotline-test-{uuid.uuid4().hex[:10]}:")
    try:
        yield broker
    finally:
        for key in client.scan_iter(match=broker.prefix + "*", count=500):
            client.delete(key)
        client.close()


def stack_env(*, database_url: str, broker: Broker, s3: S3, bucket: str, local_dir: Path,
              **extra: str) -> dict[str, str]:
    """The environment of every process of one scale-out deployment (API and workers)."""
    return {
        "SHOTLINE_QUEUE": "celery", "SHOTLINE_BROKER_URL": broker.url,
        "SHOTLINE_BROKER_PREFIX": broker.prefix, "SHOTLINE_DATABASE_URL": database_url,
        "SHOTLINE_STORAGE": f"s3://{bucket}/media", "SHOTLINE_S3_ENDPOINT_URL": s3.endpoint,
        "SHOTLINE_LOCAL_DIR": str(local_dir), "SHOTLINE_LOCAL_JOURNAL": str(local_dir / "journal.jsonl"),
        "SHOTLINE_VISIBILITY_TIMEOUT": "30", "SHOTLINE_POLL_INTERVAL": "0.2",
        "SHOTLINE_LOCAL_LATENCY": "0.3",
        "SHOTLINE_BACKOFF_BASE": "0.05", "SHOTLINE_ALLOW_PRIVATE_WEBHOOKS": "1",
        **CREDENTIALS, **extra,
    }


@contextmanager
def celery_worker(home: Path, env: dict[str, str], log: Path,
                  concurrency: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    """``shotline worker --concurrency N`` on the celery queue, with its own empty home; a
    session of its own, so the whole worker (pool children too) can be killed at once."""
    home.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, **env, "SHOTLINE_HOME": str(home)}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shotline", "worker",
                                 "--concurrency", str(concurrency)], env=full, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            assert proc.poll() is None, f"worker exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"worker not ready: {log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        try:  # pool children left behind by a SIGKILLed parent
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and its pool children, as a machine going away would."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
