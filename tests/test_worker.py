"""Crash safety of the service: servers and workers SIGKILLed mid-render, then restarted."""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from shotline.api import open_store
from shotline.providers.local import read_journal
from shotline.service import tenants
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import reservations

from .service import BRIEF, free_port, process, queue_render, receiver, render_view, wait_until

pytestmark = pytest.mark.slow


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("kill", ["while-polling", "after-stitch"])
def test_server_killed_mid_render_resumes_without_paying_twice(tmp_path: Path, kill: str) -> None:
    home = tmp_path / "h"
    settings = Settings(home=home)
    db, _ = open_store(settings)
    key = tenants.create_key(db, "acme")
    db.close()
    port = free_port()
    logs = tmp_path / "log"
    url = f"http://127.0.0.1:{port}"
    first_env = {"SHOTLINE_LOCAL_LATENCY": "2"}
    kill_at = None
    if kill == "after-stitch":  # the process kills itself between stitching and committing
        first_env, kill_at = {"SHOTLINE_LOCAL_LATENCY": "0.2"}, "stitched"
    with receiver() as hook:
        with process(home, "serve", "--port", str(port), log=logs, kill_at=kill_at,
                     **first_env) as server:
            wait_until(lambda: _up(url), 30, "the server")
            render_id = httpx.post(url + "/v1/renders", timeout=30, json={
                "brief": BRIEF, "seconds": 8, "model": "local/sim", "size": "640x360",
                "webhook_url": hook.url}, headers={"Authorization": f"Bearer {key.key}"}).json()["id"]
            if kill == "while-polling":
                wait_until(lambda: len(read_journal(settings.journal_path)) == 2, 30, "2 submits")
                server.send_signal(signal.SIGKILL)
            server.wait(60)
            assert server.returncode == -signal.SIGKILL
        assert render_view(settings, render_id)["status"] in ("rendering", "stitching")
        # A lone worker takes the render over (the dead server's lease is recognised at once).
        with process(home, "worker", log=logs, SHOTLINE_LOCAL_LATENCY="0.2") as worker:
            wait_until(lambda: render_view(settings, render_id)["status"] == "awaiting_review",
                       60, "the render")
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
    # The processes logged their work (requests, claims), and no secret with it.
    printed = logs.read_text()
    assert "claimed render" in printed and "POST /v1/renders" in printed
    assert key.key not in printed and key.webhook_secret not in printed


def test_sigterm_releases_the_render_for_the_next_worker_at_once(tmp_path: Path) -> None:
    home = tmp_path / "h"
    settings = Settings(home=home)
    db, _ = open_store(settings)
    tenant = tenants.create_key(db, "acme").tenant
    db.close()
    render_id = queue_render(settings, tenant)
    with process(home, "worker", log=tmp_path / "log", SHOTLINE_LOCAL_LATENCY="6") as worker:
        wait_until(lambda: len(read_journal(settings.journal_path)) == 2, 30, "2 submits")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    db, _ = open_store(settings)
    with db.read() as conn:
        held = conn.execute(sa.text("SELECT status, lease_owner FROM renders")).one()
    db.close()
    assert held.status == "rendering" and held.lease_owner is None
    # The jobs kept running at the vendor: the next worker follows them, no new submits.
    with process(home, "worker", log=tmp_path / "log", SHOTLINE_LOCAL_LATENCY="0.2"):
        wait_until(lambda: render_view(settings, render_id)["status"] == "awaiting_review", 60, "the render")
    assert len(read_journal(settings.journal_path)) == 2
