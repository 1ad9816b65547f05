from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shotline.api import render
from shotline.settings import Settings

pytestmark = pytest.mark.slow


def cli(home: Path, *args: str) -> Any:
    env = {**os.environ, "SHOTLINE_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "shotline", *args, "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cache_stats_ls_prune_and_spend(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, poll_interval=0.05)
    brief = "Shot 1: Fog on a lake.\nShot 2: A heron lands.\n"
    first = render(brief, model="local/sim", seconds=8, size="640x360", settings=settings)
    stats = cli(tmp_path, "cache", "stats")
    assert stats["clips"] == 2 and stats["outputs"] == 1 and stats["bytes"] > 0
    assert stats["clips_value_usd"] == "0.8"  # money is a decimal string in JSON
    listed = cli(tmp_path, "cache", "ls")
    assert {c["key"] for c in listed} == {s.key for s in first.shots}

    # A new take of shot 2 only: shot 1 is a cache hit, and spend shows what it saved.
    render(brief.replace("heron", "crane"), model="local/sim", seconds=8, size="640x360",
           settings=settings)
    (day,) = cli(tmp_path, "spend", "--by", "day")
    assert day["spent_usd"] == "1.2" and day["saved_usd"] == "0.4"
    (model,) = cli(tmp_path, "spend", "--by", "model")
    assert model["model"] == "local/sim" and model["calls"] == 3
    rows = cli(tmp_path, "ledger")
    assert [r["seconds_billed"] for r in rows] == [4, 4, 4]
    assert all(r["provider"] == "local" and r["provider_job_id"] for r in rows)

    dry = cli(tmp_path, "cache", "prune", "--older-than", "0", "--dry-run")
    assert len(dry["removed"]) == 3 and all(Path(c["path"]).exists() for c in dry["removed"])
    # Each clip's video piece, its piece of sound and its loudness reading (3 renders' worth).
    pieces = sorted((tmp_path / "scratch" / "pieces").rglob("*.json"))
    assert dry["pieces_removed"] == len(pieces) >= 3 and all(p.exists() for p in pieces)
    assert cli(tmp_path, "cache", "stats")["clips"] == 3
    done = cli(tmp_path, "cache", "prune", "--older-than", "0")
    assert not any(Path(c["path"]).exists() for c in done["removed"])
    assert cli(tmp_path, "cache", "stats")["clips"] == 0
    assert list((tmp_path / "store" / "pieces").rglob("*.*")) == []
    kept = cli(tmp_path, "cache", "prune", "--older-than", "30")
    assert kept["removed"] == []
