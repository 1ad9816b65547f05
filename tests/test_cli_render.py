"""Rendering from the command line and the library, end to end on the priced ``local/sim``
model: what ``estimate`` says is what ``render`` bills, re-rolls of CLI renders, Ctrl-C,
and paths given as ``str``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import shotline
from shotline.errors import UserError

pytestmark = pytest.mark.slow
SIM = ["--model", "local/sim", "--size", "640x360"]


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    proc = subprocess.run([sys.executable, "-m", "shotline", *args, "--json"], cwd=cwd,
                          capture_output=True, text=True, env=env or os.environ.copy(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ledger_rows() -> list[Any]:
    return cli("ledger")  # type: ignore[no-any-return]


def test_estimate_after_a_one_word_edit_is_what_the_render_bills(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    brief = work / "harbor.md"
    brief.write_text("Shot 1: Mist hangs over the harbor.\nShot 2: A fisherman coils rope.\n"
                     "Shot 3: Gulls wheel overhead.\n")
    first = cli("render", "harbor.md", *SIM, cwd=work)
    assert Path(first["output"]) == work / "harbor.mp4" and (work / "harbor.mp4").exists()
    assert first["cost_usd"] == first["estimate_usd"] == "1.2"  # 3 calls x 4 s x $0.10

    brief.write_text(brief.read_text().replace("coils rope", "coils wet rope"))
    est = cli("estimate", "harbor.md", *SIM, cwd=work)
    assert (est["cost_usd"], est["full_usd"], est["stored"]) == ("0.4", "1.2", 2)
    assert [(s["stored"], s["cost_usd"], s["full_usd"]) for s in est["shots"]] == [
        (True, "0", "0.4"), (False, "0.4", "0.4"), (True, "0", "0.4")]

    second = cli("render", "harbor.md", *SIM, cwd=work)
    assert second["cost_usd"] == est["cost_usd"] == second["estimate_usd"]
    assert [s["cached"] for s in second["shots"]] == [True, False, True]
    assert [s["index"] for s in second["shots"]] == [1, 2, 3]
    assert sum(Decimal(r["amount"]) for r in ledger_rows()) == Decimal("1.6")

    # A render made on the command line can be re-rolled too: only shot 3 is paid again.
    again = cli("reroll", second["render_id"], "--shot", "3", cwd=work)
    assert again["render_id"] == second["render_id"] and again["cost_usd"] == "0.4"
    assert [s["cached"] for s in again["shots"]] == [True, True, False]
    assert Path(again["output"]).exists() and again["output"] != second["output"]
    assert len(ledger_rows()) == 5
    shown = cli("show", second["render_id"])
    assert [s["index"] for s in shown["shots"]] == [1, 2, 3] and shown["cost_usd"] == "0.8"


def _submitted(home: Path) -> int:
    db = home / "shotline.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute("select count(*) from calls where state = 'submitted'")
                       .fetchone()[0])
        except sqlite3.OperationalError:  # not migrated yet
            return 0


def test_ctrl_c_exits_130_and_the_same_command_resumes(tmp_path: Path,
                                                       _isolated_home: Path) -> None:
    out = tmp_path / "kites.mp4"
    env = {**os.environ, "SHOTLINE_LOCAL_LATENCY": "3"}
    args = [sys.executable, "-m", "shotline", "render", "--text",
            "Shot 1: A kite climbs.\nShot 2: The string snaps.", *SIM, "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 30
    while _submitted(_isolated_home) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert ("interrupted: 2 shots are paid and in flight; run the same command again to "
            "resume") in stderr
    assert stdout == "" and not out.exists()

    resumed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert out.exists()
    journal = (_isolated_home / "local" / "journal.jsonl").read_text().splitlines()
    assert len(journal) == 2  # the vendor saw two submits in all: nothing was paid twice
    assert len(ledger_rows()) == 2


def test_library_takes_str_paths_and_checks_the_output_before_paying(tmp_path: Path) -> None:
    out = tmp_path / "new" / "kite.mp4"
    result = shotline.render("Shot 1: A kite climbs.", model="local/sim", size="640x360",
                             output=str(out))
    assert result.output == out and out.exists() and result.cost_usd == Decimal("0.4")
    assert result.estimate_usd == Decimal("0.4")

    with pytest.raises(UserError, match="is a directory"):
        shotline.render("Shot 1: Another kite.", model="local/sim", size="640x360",
                        output=str(tmp_path))
    assert len(ledger_rows()) == 1 and len(cli("renders")) == 1  # nothing written, nothing paid

    brief = tmp_path / "kite.md"  # a path (here an os.PathLike) is a file, a str is text
    brief.write_text("Shot 1: A kite climbs.")
    est = shotline.estimate(brief, model="local/sim", size="640x360")
    assert est.cost_usd == 0 and est.full_usd == Decimal("0.4") and est.shots[0].stored
    assert shotline.plan(str(brief), model="local/sim").shots[0].prompt == str(brief)
