"""Crash safety of the service: servers and workers SIGKILLed mid-render, then restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from shotline import actions, ledger, tenants
from shotline.api import open_store
from shotline.db import reservations
from shotline.providers.local import read_journal
from shotline.settings import Settings

from .service import BRIEF, free_port, receiver

pytestmark = pytest.mark.slow


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "SHOTLINE_HOME": str(home), "SHOTLINE_POLL_INTERVAL": "0.05",
            "SHOTLINE_ALLOW_PRIVATE_WEBHOOKS": "1", **extra}


@contextmanager
def process(home: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "shotline", *args], env=_env(home, **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def wait_until(check: object, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _status(settings: Settings, render_id: str) -> str:
    db, _ = open_store(settings)
    try:
        return str(actions.get(db, None, render_id, operator=True)["status"])
    finally:
        db.close()


@pytest.mark.parametrize("kill", ["while-polling", "after-stitch"])
def test_server_killed_mid_render_resumes_without_paying_twice(tmp_path: Path, kill: str) -> None:
    home = tmp_path / "h"
    settings = Settings(home=home)
    db, _ = open_store(settings)
    key = tenants.create_key(db, "acme")
    db.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first_env = {"SHOTLINE_LOCAL_LATENCY": "2"}
    if kill == "after-stitch":  # the process kills itself between stitching and committing
        first_env = {"SHOTLINE_LOCAL_LATENCY": "0.2", "SHOTLINE_TEST_KILL_AT": "stitched"}
    with receiver() as hook:
        with process(home, "serve", "--port", str(port), **first_env) as server:
            wait_until(lambda: _up(url), 30, "the server")
            render_id = httpx.post(url + "/v1/renders", timeout=30, json={
                "brief": BRIEF, "seconds": 8, "model": "local/sim", "size": "640x360",
                "webhook_url": hook.url}, headers={"Authorization": f"Bearer {key.key}"}).json()["id"]
            if kill == "while-polling":
                wait_until(lambda: len(read_journal(settings.journal_path)) == 2, 30, "2 submits")
                server.send_signal(signal.SIGKILL)
            server.wait(60)
            assert server.returncode == -signal.SIGKILL
        assert _status(settings, render_id) in ("rendering", "stitching")
        # A lone worker takes the render over (the dead server's lease is recognised at once).
        with process(home, "worker", SHOTLINE_LOCAL_LATENCY="0.2") as worker:
            wait_until(lambda: _status(settings, render_id) == "awaiting_review", 60, "the render")
            hook.wait_for("render.awaiting_review")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0
    journal = read_journal(settings.journal_path)
    assert len(journal) == 2 and len({j["key"] for j in journal}) == 2  # one submit per shot
    db, _ = open_store(settings)
    rows = ledger.rows(db, render_id)
    assert len(rows) == 2 and sum(r["amount"] for r in rows) == Decimal("0.8")
    with db.read() as conn:
        assert conn.execute(sa.select(reservations.c.state)).scalar_one() == "settled"
    db.close()
    assert [r.json["type"] for r in hook.got].count("render.awaiting_review") == 1


def test_sigterm_releases_the_render_for_the_next_worker_at_once(tmp_path: Path) -> None:
    from .test_cli_review import queue

    home = tmp_path / "h"
    settings = Settings(home=home)
    db, _ = open_store(settings)
    tenant = tenants.create_key(db, "acme").tenant
    db.close()
    render_id = queue(settings, tenant)
    with process(home, "worker", SHOTLINE_LOCAL_LATENCY="6") as worker:
        wait_until(lambda: len(read_journal(settings.journal_path)) == 2, 30, "2 submits")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    db, _ = open_store(settings)
    with db.read() as conn:
        held = conn.execute(sa.text("SELECT status, lease_owner FROM renders")).one()
    db.close()
    assert held.status == "rendering" and held.lease_owner is None
    # The jobs kept running at the vendor: the next worker follows them, no new submits.
    with process(home, "worker", SHOTLINE_LOCAL_LATENCY="0.2"):
        wait_until(lambda: _status(settings, render_id) == "awaiting_review", 60, "the render")
    assert len(read_journal(settings.journal_path)) == 2
