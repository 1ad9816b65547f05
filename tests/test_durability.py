"""Never pay twice: crashes at every recovery point, singleflight, cache exactness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shotline.api import render
from shotline.errors import BudgetError
from shotline.providers.local import read_journal
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from . import killpoint

pytestmark = pytest.mark.slow

BRIEF = "Shot 1: A red kite rises.\nShot 2: A blue kite dips.\nShot 3: Both kites tangle.\n"
ARGS = ["--model", "local/sim", "--seconds", "12", "--size", "640x360", "--audio"]


def cli(home: Path, *args: str, kill_at: str | None = None, brief: str = BRIEF,
        latency: float = 0.0, background: bool = False) -> Any:
    env = {**os.environ, "SHOTLINE_HOME": str(home), "SHOTLINE_POLL_INTERVAL": "0.05",
           "SHOTLINE_LOCAL_LATENCY": str(latency)}
    # A kill point is armed by the test's own entry point, never by a setting.
    entry = [str(killpoint.SCRIPT), kill_at] if kill_at else ["-m", "shotline"]
    cmd = [sys.executable, *entry, "render", "-", *ARGS, *args, "--json"]
    if background:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdin is not None
        proc.stdin.write(brief)
        proc.stdin.close()
        proc.stdin = None  # written and closed: communicate() must not flush it again
        return proc
    return subprocess.run(cmd, input=brief, capture_output=True, text=True, env=env, timeout=180)


def journal(home: Path) -> list[dict[str, Any]]:
    path = home / "local" / "journal.jsonl"
    return read_journal(path, accepted_only=True)


def ledger_rows(home: Path) -> list[dict[str, Any]]:
    return ledger.rows(Database.for_home(home))


@pytest.mark.parametrize(
    "point", ["claimed", "submitted-uncommitted", "submitted", "downloaded", "done", "stitched"]
)
def test_sigkill_at_each_recovery_point_then_resume(tmp_path: Path, point: str) -> None:
    home = tmp_path / "h"
    killed = cli(home, kill_at=point)
    assert killed.returncode == -signal.SIGKILL
    resumed = cli(home)
    assert resumed.returncode == 0, resumed.stderr
    out = json.loads(resumed.stdout)
    submits = Counter(j["key"] for j in journal(home))
    assert len(submits) == 3 and set(submits.values()) == {1}, submits  # no shot paid twice
    rows = ledger_rows(home)
    assert len(rows) == 3 and len({r["provider_job_id"] for r in rows}) == 3
    assert {r["provider_job_id"] for r in rows} == {j["job_id"] for j in journal(home)}
    # Every billed second is in the ledger, once; the estimate and the ledger agree.
    assert float(sum(r["amount"] for r in rows)) == pytest.approx(0.8 * 3)
    # Same output file as an uninterrupted render of the same brief elsewhere.
    clean = json.loads(cli(tmp_path / "clean").stdout)
    assert Path(out["output"]).read_bytes() == Path(clean["output"]).read_bytes()


@pytest.mark.timeout(240)
def test_ten_processes_share_one_submit_per_shot(tmp_path: Path) -> None:
    home = tmp_path / "h"
    Database.for_home(home)
    procs = [cli(home, latency=1.0, background=True) for _ in range(10)]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        outputs.append(json.loads(stdout))
    submits = Counter(j["key"] for j in journal(home))
    assert len(submits) == 3 and set(submits.values()) == {1}
    assert len(ledger_rows(home)) == 3
    assert len({o["output"] for o in outputs}) == 1
    assert sum(Decimal(o["cost_usd"]) for o in outputs) == Decimal("2.4")  # paid once in all


def test_one_word_edit_rerenders_one_shot(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, poll_interval=0.05)
    opts: dict[str, Any] = dict(model="local/sim", seconds=12, size="640x360", settings=settings)
    first = render(BRIEF, **opts)
    assert [s.cached for s in first.shots] == [False, False, False]
    edited = render(BRIEF.replace("blue kite", "green kite"), **opts)
    assert [s.cached for s in edited.shots] == [True, False, True]
    assert edited.cost_usd == first.cost_usd / 3
    assert len(journal(tmp_path)) == 4


def test_reroll_is_a_new_take_and_nothing_else_bypasses_the_cache(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, poll_interval=0.05)
    opts: dict[str, Any] = dict(model="local/sim", seconds=12, size="640x360", settings=settings)
    render(BRIEF, **opts)
    again = render(BRIEF, **opts)
    assert again.reopened and again.cost_usd == 0
    take2 = render(BRIEF, take=2, **opts)
    assert not take2.reopened and all(not s.cached for s in take2.shots)
    assert len(journal(tmp_path)) == 6 and {j["take"] for j in journal(tmp_path)} == {1, 2}


def test_reopen_by_id_is_free(tmp_path: Path) -> None:
    home = tmp_path / "h"
    out = json.loads(cli(home).stdout)
    before = len(journal(home))
    env = {**os.environ, "SHOTLINE_HOME": str(home)}
    shown = subprocess.run([sys.executable, "-m", "shotline", "show", out["render_id"], "--json"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["status"] == "awaiting_review"  # the stored file: what render copied to ./
    assert Path(data["output"]).read_bytes() == Path(out["output"]).read_bytes()
    assert len(journal(home)) == before  # reopening made no vendor call
    listed = json.loads(subprocess.run([sys.executable, "-m", "shotline", "renders", "--json"],
                                       capture_output=True, text=True, env=env).stdout)
    assert [r["id"] for r in listed] == [out["render_id"]]


def test_budget_refusal_before_any_call(tmp_path: Path) -> None:
    home = tmp_path / "h"
    proc = cli(home, "--max-usd", "1")
    assert proc.returncode == 3
    assert "estimate is $2.40" in proc.stderr and "--max-usd" in proc.stderr
    assert journal(home) == [] and ledger_rows(home) == []
    with pytest.raises(BudgetError):
        render(BRIEF, model="local/sim", seconds=12, size="640x360", max_usd=1,
               settings=Settings(home=home))


@pytest.mark.timeout(180)
def test_budget_race_between_processes(tmp_path: Path) -> None:
    home = tmp_path / "h"
    Database.for_home(home)
    briefs = [f"Shot 1: Kite number {i} rises.\n" for i in range(6)]
    env_budget = {"SHOTLINE_DAILY_BUDGET_USD": "1.70"}  # each render is 4 s x $0.10: four fit
    procs = []
    for b in briefs:
        env = {**os.environ, "SHOTLINE_HOME": str(home), "SHOTLINE_LOCAL_LATENCY": "1",
               "SHOTLINE_POLL_INTERVAL": "0.05", **env_budget}
        p = subprocess.Popen([sys.executable, "-m", "shotline", "render", "-", "--model",
                              "local/sim", "--seconds", "4", "--size", "640x360", "--json"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        assert p.stdin is not None
        p.stdin.write(b)
        p.stdin.close()
        p.stdin = None
        procs.append(p)
    codes, errors = [], []
    for p in procs:
        _, err = p.communicate(timeout=240)
        codes.append(p.returncode)
        errors.append(err)
    assert codes.count(0) == 4 and codes.count(3) == 2, errors
    assert all("daily budget" in e for e, c in zip(errors, codes, strict=True) if c == 3)
    spent = float(sum(r["amount"] for r in ledger_rows(home)))
    assert spent == pytest.approx(1.6) and spent <= 1.70
