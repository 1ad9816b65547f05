"""`shotline approve|reject|reroll|cancel` act on any render, as the operator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shotline.api import open_store
from shotline.service import tenants
from shotline.settings import Settings

from .service import process, queue_render, render_view, wait_until
from .test_cli import run

pytestmark = pytest.mark.slow


def test_review_commands(tmp_path: Path) -> None:
    home = Path(os.environ["SHOTLINE_HOME"])
    settings = Settings(home=home)
    db, _ = open_store(settings)
    tenant = tenants.create_key(db, "acme").tenant
    db.close()
    waiting = queue_render(settings, tenant)
    with process(home, "worker", log=tmp_path / "log", SHOTLINE_LOCAL_LATENCY="0.2"):
        wait_until(lambda: render_view(settings, waiting)["status"] == "awaiting_review", 60, "render")
        rerolled = run("reroll", waiting, "--shot", "2", "--prompt", "2=The kite lands softly.",
                       "--json")
        assert rerolled.returncode == 0, rerolled.stderr
        assert json.loads(rerolled.stdout)["status"] == "rendering"
        wait_until(lambda: render_view(settings, waiting)["status"] == "awaiting_review", 60, "reroll")
    shots = render_view(settings, waiting)["shots"]
    assert [s["take"] for s in shots] == [1, 2]  # type: ignore[attr-defined,index]
    bad = run("reroll", waiting, "--shot", "2", "--prompt", "two=words")
    assert bad.returncode == 2 and "N=TEXT" in bad.stderr
    approved = run("approve", waiting)
    assert approved.returncode == 0 and f"{waiting}: published" in approved.stdout
    again = run("reject", waiting, "--reason", "too late")
    assert again.returncode == 2 and "is published" in again.stderr
    queued = queue_render(settings, tenant, seed=7)  # no worker runs: it stays queued
    cancelled = run("cancel", queued, "--json")
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "cancelled"
    missing = run("approve", "r_nothing")
    assert missing.returncode == 2 and "no render 'r_nothing'" in missing.stderr
