"""Test bodies that several vendor suites share, called from each vendor's own test.

Each helper takes the vendor's fake (a :class:`ScriptedFaults`) and a ``render`` callable
that renders the one-shot brief into ``home``, so every vendor keeps its named test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shotline.store import ledger
from shotline.store.db import Database

from .vendor_server import ScriptedFaults


def retried_after_retry_after(home: Path, fake: ScriptedFaults,
                              render_one: Callable[[], Any]) -> None:
    """A 429 with Retry-After is resubmitted, no sooner than it said, and billed once."""
    fake.on("dips", "429", retry_after=1.0)
    render_one()
    first, second = fake.posts_for("dips")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.0
    assert len(ledger.rows(Database.for_home(home))) == 1


def burst_of_503s_retried(home: Path, fake: ScriptedFaults,
                          render_one: Callable[[], Any]) -> None:
    """Three 503s in a row are each resubmitted, and the shot is billed once."""
    fake.on("rises", "503", times=3)
    render_one()
    assert [s.status for s in fake.posts_for("rises")] == [503, 503, 503, 200]
    assert len(ledger.rows(Database.for_home(home))) == 1


def accepted(fake: ScriptedFaults) -> set[str]:
    """The ids of every job the fake accepted."""
    return {s.job_id for s in fake.submits if s.job_id}


def outcomes(home: Path, fake: ScriptedFaults) -> dict[str, str]:
    """Each ledger row's outcome, by the word of its shot's prompt; one row per billed job."""
    by_job = {s.job_id: w for w in ("kite", "storm") for s in fake.posts_for(w) if s.job_id}
    paid = ledger.rows(Database.for_home(home))
    assert len(paid) == len({r["provider_job_id"] for r in paid})
    return {by_job[r["provider_job_id"]]: r["outcome"] for r in paid}


def storm_429_retried(home: Path, fake: ScriptedFaults, render_two: Callable[[], Any]) -> None:
    """The storm shot's 429 is resubmitted after Retry-After; both shots billed once."""
    fake.on("storm", "429", retry_after=1)
    render_two()
    first, second = fake.posts_for("storm")
    assert first.job_id is None and second.job_id is not None
    assert second.at - first.at >= 1.0
    paid = ledger.rows(Database.for_home(home))
    assert len(paid) == 2
    assert {r["provider_job_id"] for r in paid} == accepted(fake)


def storm_failure_resubmitted(home: Path, fake: ScriptedFaults,
                              render_two: Callable[[], Any]) -> None:
    """A job that fails transiently is resubmitted, and the failed job is not billed."""
    fake.on("storm", "fail")
    render_two()
    failed, good = fake.posts_for("storm")
    assert failed.job_id and good.job_id
    paid = ledger.rows(Database.for_home(home))
    assert {r["provider_job_id"] for r in paid} == accepted(fake) - {failed.job_id}


def dips_429_honoured(home: Path, fake: Any, render_two: Callable[[], Any],
                      ok: int = 200) -> list[dict[str, Any]]:
    """The dips shot's one 429 is retried after ``fake.retry_after``; only accepted jobs
    are billed. Returns the ledger rows for vendor-specific checks."""
    fake.on("dips", "429", times=1)
    render_two()
    posts = fake.posts_for("dips")
    assert [p.status for p in posts] == [429, ok]
    assert posts[1].at - posts[0].at >= fake.retry_after
    paid = ledger.rows(Database.for_home(home))
    assert sorted(r["provider_job_id"] for r in paid) == sorted(
        str(s.job_id) for s in fake.accepted())
    return paid


def dips_503_burst_retried(home: Path, fake: ScriptedFaults, render_two: Callable[[], Any],
                           times: int, ok: int = 200) -> None:
    """``times`` 503s in a row are each retried, and both shots are billed once."""
    fake.on("dips", "503", times=times)
    render_two()
    assert [p.status for p in fake.posts_for("dips")] == [503] * times + [ok]
    assert len(ledger.rows(Database.for_home(home))) == 2


def dips_submit_timeout_not_resubmitted(fake: ScriptedFaults,
                                        fail: Callable[..., BaseException]) -> None:
    """A submit whose answer comes after the timeout, on a vendor with no lookup, is not
    sent again, and the message says what to check."""
    fake.on("dips", "slow", times=1)
    error = fail(provider_timeout=0.5)
    assert "shot 2:" in str(error) and "not resubmitted" in str(error)
    assert "dashboard" in str(error) and "after 20" in str(error)  # from when to look
    assert len(fake.posts_for("dips")) == 1


def dips_submit_timeout_reconciled(home: Path, fake: ScriptedFaults,
                                   render_two: Callable[[], Any], word: str = "dips") -> None:
    """A submit whose answer comes after the timeout is found with the vendor's lookup and
    followed: the render finishes, that shot was posted once (the fake records every POST),
    and each job is billed once."""
    fake.on(word, "slow", times=1)
    render_two()
    [post] = fake.posts_for(word)
    paid = ledger.rows(Database.for_home(home))
    assert post.job_id in {r["provider_job_id"] for r in paid}
    assert sorted(r["provider_job_id"] for r in paid) == sorted(accepted(fake))
