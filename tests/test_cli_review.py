"""`shotline approve|reject|reroll|cancel` act on any render, as the operator."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from shotline import actions, tenants
from shotline.api import open_store
from shotline.capabilities import load_table
from shotline.settings import Settings

from .service import BRIEF
from .test_cli import run
from .test_worker import process, wait_until

pytestmark = pytest.mark.slow


def queue(settings: Settings, tenant: str, **kw: object) -> str:
    db, _ = open_store(settings)
    try:
        req = actions.RenderRequest(brief=BRIEF, seconds=4, size="640x360", **kw)  # type: ignore[arg-type]
        view, _ = asyncio.run(actions.submit(db, settings, load_table(settings.overrides_path),
                                             tenant, req))
        return str(view["id"])
    finally:
        db.close()


def status(settings: Settings, render_id: str) -> dict[str, object]:
    db, _ = open_store(settings)
    try:
        return actions.get(db, None, render_id, operator=True)
    finally:
        db.close()


def test_review_commands(tmp_path: Path) -> None:
    home = Path(os.environ["SHOTLINE_HOME"])
    settings = Settings(home=home)
    db, _ = open_store(settings)
    tenant = tenants.create_key(db, "acme").tenant
    db.close()
    waiting = queue(settings, tenant)
    with process(home, "worker", SHOTLINE_LOCAL_LATENCY="0.2"):
        wait_until(lambda: status(settings, waiting)["status"] == "awaiting_review", 60, "render")
        rerolled = run("reroll", waiting, "--shot", "2", "--prompt", "2=The kite lands softly.",
                       "--json")
        assert rerolled.returncode == 0, rerolled.stderr
        assert json.loads(rerolled.stdout)["status"] == "rendering"
        wait_until(lambda: status(settings, waiting)["status"] == "awaiting_review", 60, "reroll")
    shots = status(settings, waiting)["shots"]
    assert [s["take"] for s in shots] == [1, 2]  # type: ignore[attr-defined,index]
    bad = run("reroll", waiting, "--shot", "2", "--prompt", "two=words")
    assert bad.returncode == 2 and "N=TEXT" in bad.stderr
    approved = run("approve", waiting)
    assert approved.returncode == 0 and f"{waiting}: published" in approved.stdout
    again = run("reject", waiting, "--reason", "too late")
    assert again.returncode == 2 and "is published" in again.stderr
    queued = queue(settings, tenant, seed=7)  # no worker runs: it stays queued
    cancelled = run("cancel", queued, "--json")
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    missing = run("approve", "r_nothing")
    assert missing.returncode == 2 and "no render 'r_nothing'" in missing.stderr
