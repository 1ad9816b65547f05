"""Every scripted vendor fault ends in the right state, with a clear message."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shotline.api import render
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.providers.local import read_journal
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

pytestmark = pytest.mark.slow

BRIEF = "Shot 1: A red kite rises.\nShot 2: A blue kite dips.\nShot 3: Both kites tangle.\n"


def run(tmp_path: Path, faults: str, max_usd: float | None = None, **kw: Any) -> Any:
    settings = Settings(home=tmp_path, local_faults=faults, poll_interval=0.05,
                        backoff_base=0.05, **kw)
    return render(BRIEF, model="local/sim", seconds=12, size="640x360", audio=True,
                  settings=settings, max_usd=max_usd)


def submits(home: Path) -> Counter[int]:
    path = home / "local" / "journal.jsonl"
    return Counter(j["index"] for j in read_journal(path, accepted_only=True))


@pytest.mark.parametrize("fault", ["429/0.2", "500"])
def test_transient_submit_errors_are_retried(tmp_path: Path, fault: str) -> None:
    result = run(tmp_path, f"shot2:{fault}:x2")
    assert result.seconds == pytest.approx(12, abs=1 / 24)
    assert submits(tmp_path) == Counter({0: 1, 1: 1, 2: 1})  # refused submits made no job
    refused = [j for j in read_journal(tmp_path / "local" / "journal.jsonl") if not j["accepted"]]
    assert [(j["index"], j["job_id"]) for j in refused] == [(1, None), (1, None)]


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    from datetime import datetime

    run(tmp_path, "shot1:429/1.5:x1")
    # The refused submit and its retry, as the vendor saw them: 1.5 s or more apart.
    journal = [j for j in read_journal(tmp_path / "local" / "journal.jsonl") if j["index"] == 0]
    refused, accepted = (datetime.fromisoformat(j["time"]).timestamp() for j in journal)
    assert not journal[0]["accepted"] and journal[1]["accepted"]
    assert accepted - refused >= 1.5


def test_persistent_5xx_gives_up_and_keeps_other_clips(tmp_path: Path) -> None:
    with pytest.raises(RenderFailed, match="shot 2: gave up after 4 attempts") as info:
        run(tmp_path, "shot2:500")
    assert [s.clip is not None for s in info.value.shots] == [True, False, True]
    # The kept clips are not paid for again once the vendor recovers.
    again = run(tmp_path, "")
    assert [s.cached for s in again.shots] == [True, False, True]


def test_failed_job_is_resubmitted_as_a_new_attempt(tmp_path: Path) -> None:
    run(tmp_path, "shot3:fail:x1")
    assert submits(tmp_path)[2] == 2
    rows = ledger.rows(Database.for_home(tmp_path))
    assert len(rows) == 3  # local/sim does not bill failed jobs


@pytest.mark.parametrize("fault", ["moderation", "moderation/poll"])
def test_moderation_fails_the_render_with_the_vendors_reason(tmp_path: Path, fault: str) -> None:
    with pytest.raises(RenderFailed, match="shot 1: .*moderation") as info:
        run(tmp_path, f"shot1:{fault}")
    assert sum(1 for s in info.value.shots if s.clip) == 2
    assert submits(tmp_path)[0] <= 1  # never retried


def test_a_hung_job_hits_the_deadline_and_is_not_resubmitted(tmp_path: Path) -> None:
    with pytest.raises(RenderFailed, match="did not finish within 2 s"):
        run(tmp_path, "shot2:hang", render_deadline=2)
    assert submits(tmp_path)[1] == 1


@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_a_broken_file_fails_the_shot_without_paying_again(tmp_path: Path, fault: str) -> None:
    with pytest.raises(RenderFailed, match="shot 2: job loc_[0-9a-f]+ returned an unusable file"):
        run(tmp_path, f"shot2:{fault}")
    assert submits(tmp_path)[1] == 1


def test_lost_submit_answer_is_reconciled_not_resubmitted(tmp_path: Path) -> None:
    result = run(tmp_path, "shot1:timeout:x1")
    assert not result.shots[0].error and submits(tmp_path)[0] == 1
    assert len(ledger.rows(Database.for_home(tmp_path))) == 3


def test_clips_the_way_other_vendors_deliver_them(tmp_path: Path) -> None:
    faults = ("shot1:shortaudio+fps=25,shot2:codec=hevc+fps=30+arate=44100+mono+size=720x1280,"
              "shot3:noaudio+pix=yuv444p")
    result = run(tmp_path, faults)
    media.verify(result.output, size=(640, 360), fps=24, frames=12 * 24, audio=True)
    # Two clips in the output's format (their video copied as they arrived) and one at
    # 25 fps (normalised): one stream cannot hold both, so the copied two are normalised
    # at the join, and the output decodes whole.
    mixed = run(tmp_path / "mixed", "shot2:fps=25")
    assert [s.segment.copied for s in mixed.shots if s.segment] == [True, False, True]
    media.verify(mixed.output, size=(640, 360), fps=24, frames=12 * 24, audio=True, decode=True)


def test_a_shot_the_quality_gate_fails_is_rerolled_once(tmp_path: Path) -> None:
    # The "vendor" sends shot 2's first take without the sound that was asked for.
    result = run(tmp_path, "shot2:noaudio:x1", quality_reroll=True)
    assert result.flags == [] and [s.take for s in result.plan.shots] == [1, 2, 1]
    assert submits(tmp_path) == Counter({0: 1, 1: 2, 2: 1})
    db = Database(f"sqlite:///{tmp_path / 'shotline.db'}")
    rows = ledger.rows(db, result.render_id)
    db.close()
    assert len(rows) == 4 and result.cost_usd == sum(r["amount"] for r in rows)  # both takes paid
    media.verify(result.output, size=(640, 360), fps=24, frames=12 * 24, audio=True)


def test_a_failing_shot_is_not_rerolled_past_the_budget_or_by_default(tmp_path: Path) -> None:
    # 3 shots of 4 s with sound on local/sim cost $2.40: a fourth call does not fit.
    result = run(tmp_path / "a", "shot2:noaudio:x1", max_usd=2.40, quality_reroll=True)
    assert [(f.shot, f.kind, f.severity) for f in result.flags] == [(2, "silent", "fail")]
    assert submits(tmp_path / "a") == Counter({0: 1, 1: 1, 2: 1})
    plain = run(tmp_path / "b", "shot2:noaudio:x1")
    assert [(f.shot, f.kind) for f in plain.flags] == [(2, "silent")]
    assert submits(tmp_path / "b") == Counter({0: 1, 1: 1, 2: 1})
