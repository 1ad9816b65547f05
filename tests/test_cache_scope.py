"""Whose cache a shot is in: each tenant's own by default, one for all when shared.

A tenant must not learn, from a cached flag, a $0 cost or a render that finishes at once,
that another tenant rendered a prompt, nor get its clip free. ``SHOTLINE_SHARED_CACHE=1``
lets an operator trade that away for money. The CLI's (and the library's) renders are one
tenant of their own. Within one tenant nothing is ever paid for twice.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import shotline
from shotline.core.keys import digest, shot_key
from shotline.providers.local import read_journal
from shotline.settings import Settings

from .service import BRIEF, running, service_settings, wait_status

ARGS: dict[str, Any] = {"brief": BRIEF, "seconds": 8, "model": "local/sim", "size": "640x360"}


def test_a_scope_changes_the_key_and_no_scope_is_the_key_as_it_always_was() -> None:
    fields: dict[str, Any] = dict(provider="local", model="local/sim", prompt="A kite.",
                                  seconds=4, size="640x360", fps=24, audio=False, seed=None,
                                  take=1)
    unscoped = shot_key(**fields)
    assert unscoped == digest({"v": 1, "kind": "shot", **fields, "images": []})
    a, b = shot_key(**fields, scope="t_a"), shot_key(**fields, scope="t_b")
    assert len({unscoped, a, b}) == 3


def submits(settings: Settings) -> Counter[str]:
    return Counter(j["prompt"] for j in read_journal(settings.journal_path, accepted_only=True))


@pytest.mark.slow
def test_tenants_never_see_or_get_each_others_clips(tmp_path: Path) -> None:
    settings = service_settings(tmp_path / "h")
    with running(settings) as server:
        first, second = server.new_key("a"), server.new_key("b")
        a, b = server.client(first.key), server.client(second.key)
        mine = wait_status(a, a.post("/v1/renders", json=ARGS).json()["id"], "awaiting_review")
        assert [s["cached"] for s in mine["shots"]] == [False, False]
        # B asks for the same brief: nothing says A made it, and B pays for its own calls.
        made = b.post("/v1/renders", json=ARGS)
        assert made.status_code == 202 and made.json()["id"] != mine["id"]
        theirs = wait_status(b, made.json()["id"], "awaiting_review")
        assert [s["cached"] for s in theirs["shots"]] == [False, False]
        assert theirs["cost_usd"] == mine["cost_usd"] == "0.8"
        assert all(n == 2 for n in submits(settings).values())  # each shot once per tenant
        # Within a tenant nothing is paid twice: the same brief is the finished render, and
        # a brief sharing a shot gets that shot from the tenant's own cache.
        again = a.post("/v1/renders", json=ARGS)
        assert again.status_code == 200 and again.json()["id"] == mine["id"]
        edited = dict(ARGS, brief=BRIEF.replace("snaps", "breaks"))
        half = wait_status(a, a.post("/v1/renders", json=edited).json()["id"], "awaiting_review")
        assert [s["cached"] for s in half["shots"]] == [True, False]
        # A re-roll keeps the render's scope: the shot not re-rolled is A's stored one.
        rerolled = a.post(f"/v1/renders/{mine['id']}/reroll", json={"shots": [2]})
        assert rerolled.status_code == 202, rerolled.text
        view = wait_status(a, mine["id"], "awaiting_review")
        assert [s["cached"] for s in view["shots"]] == [True, False]
        spent = {t: sum(Decimal(r["amount"]) for r in c.get("/v1/ledger").json()["data"])
                 for t, c in (("a", a), ("b", b))}
        assert spent == {"a": Decimal("1.6"), "b": Decimal("0.8")}
    # The CLI is a tenant of its own: the same brief is neither stored for it nor free.
    cli_settings = Settings(home=settings.home, poll_interval=0.05)
    estimate = shotline.estimate(BRIEF, **{k: v for k, v in ARGS.items() if k != "brief"},
                                 settings=cli_settings)
    assert estimate.stored == 0 and estimate.cost_usd == Decimal("0.8")
    result = shotline.render(BRIEF, **{k: v for k, v in ARGS.items() if k != "brief"},
                             settings=cli_settings)
    assert [s.cached for s in result.shots] == [False, False] and result.cost_usd == Decimal("0.8")


@pytest.mark.slow
def test_a_shared_cache_serves_every_tenant_and_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "h"
    cli_settings = Settings(home=home, poll_interval=0.05, shared_cache=True)
    made = shotline.render(BRIEF, **{k: v for k, v in ARGS.items() if k != "brief"},
                           settings=cli_settings)
    assert made.cost_usd == Decimal("0.8")
    settings = service_settings(home, shared_cache=True)
    with running(settings) as server:
        client = server.client(server.new_key("b").key)
        view = wait_status(client, client.post("/v1/renders", json=ARGS).json()["id"],
                           "awaiting_review")
    assert [s["cached"] for s in view["shots"]] == [True, True] and view["cost_usd"] == "0"
    assert all(n == 1 for n in submits(settings).values())  # the operator paid once in all
