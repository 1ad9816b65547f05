"""Takes: several candidates of a shot rendered side by side, billed and stored; the one
picked is stitched, and a pick restitches from the stored clips without a vendor call."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import av
import pytest
import sqlalchemy as sa
from rich.console import Console

from shotline import api
from shotline.cli import result_json
from shotline.core.capabilities import load_table
from shotline.core.planner import Plan
from shotline.core.takes import candidates, extras, pick, slot_owner
from shotline.display import RenderDisplay
from shotline.engine.renderer import ShotEvent, plan_requests
from shotline.errors import BriefError, StateError
from shotline.providers.local import read_journal
from shotline.service import actions
from shotline.settings import Settings
from shotline.store import lifecycle
from shotline.store.db import clips, ledger, renders

from .service import wait_status

BRIEF = "Shot 1: A red kite rises over the dunes.\n\nShot 2: The kite dips toward the sea."


def settings(home: Path, **kw: object) -> Settings:
    return Settings(home=home, poll_interval=0.05, backoff_base=0.05, **kw)  # type: ignore[arg-type]


def test_estimate_shows_n_times(tmp_path: Path) -> None:
    s = settings(tmp_path)
    one = api.estimate(BRIEF, model="local/sim", seconds=8, size="640x360", settings=s)
    three = api.estimate(BRIEF, model="local/sim", seconds=8, size="640x360", takes=3,
                         settings=s)
    assert one.cost_usd == Decimal("0.8")  # two 4 s calls at $0.10 a second
    assert three.cost_usd == 3 * one.cost_usd and three.billed_seconds == 3 * one.billed_seconds
    assert [c.takes for c in three.shots] == [3, 3]
    assert three.shots[0].cost_usd == 3 * one.shots[0].cost_usd


def test_takes_are_laid_out_after_the_shots() -> None:
    plan = api.plan(BRIEF, model="local/sim", seconds=8, takes=3)
    assert [candidates(s) for s in plan.shots] == [(1, 2, 3), (1, 2, 3)]
    assert [(s.index, s.take) for s in extras(plan)] == [(2, 2), (3, 3), (4, 2), (5, 3)]
    assert [slot_owner(plan, k) for k in range(6)] == [0, 1, 0, 0, 1, 1]
    requests, key = plan_requests(plan, load_table(None).get("local/sim"), Settings(), None)
    # Each call knows its shot (the animatic draws that number, faults match it)...
    assert [(r.index, r.number, r.take) for r in requests] == [
        (0, 1, 1), (1, 2, 1), (2, 1, 2), (3, 1, 3), (4, 2, 2), (5, 2, 3)]
    # ...and a render with takes is not the twin of one without, though its output may be.
    alone, _ = plan_requests(api.plan(BRIEF, model="local/sim", seconds=8), load_table(None)
                             .get("local/sim"), Settings(), None)
    assert [r.key for r in alone] == [r.key for r in requests[:2]]
    assert key != plan_requests(api.plan(BRIEF, model="local/sim", seconds=8),
                                load_table(None).get("local/sim"), Settings(), None)[1]
    picked = pick(plan, 2, 3)
    assert picked.shots[1].take == 3 and [(s.index, s.take) for s in extras(picked)] == [
        (2, 2), (3, 3), (4, 1), (5, 2)]
    with pytest.raises(BriefError, match="shot 2 has no take 4: its takes are 1, 2, 3"):
        pick(plan, 2, 4)
    with pytest.raises(BriefError, match="no shot 3: this render has shots 1 to 2"):
        pick(plan, 3, 1)


@pytest.mark.parametrize("takes", [0, 5])
def test_too_many_or_too_few_takes_are_refused(tmp_path: Path, takes: int) -> None:
    with pytest.raises(Exception, match="takes") as caught:
        api.render(BRIEF, model="local/sim", seconds=8, takes=takes, settings=settings(tmp_path))
    assert "1 to" in str(caught.value) or "at least 1" in str(caught.value)
    assert not (tmp_path / "local" / "journal.jsonl").exists()
    assert not (tmp_path / "shotline.db").exists() or _ledger(settings(tmp_path)) == []


def _ledger(s: Settings) -> list[dict[str, object]]:
    db, _ = api.open_store(s)
    try:
        with db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(ledger))]
    finally:
        db.close()


def corner(path: Path, at: float) -> tuple[float, float, float]:
    """The mean colour of a frame's top-left corner (the local animatic's background)."""
    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        for frame in box.decode(stream):
            if frame.time is not None and frame.time >= at:
                plane = frame.reformat(format="rgb24").planes[0]
                data = bytes(plane)
                px = [data[y * plane.line_size + 3 * x:y * plane.line_size + 3 * x + 3]
                      for y in range(16) for x in range(16)]
                return (sum(p[0] for p in px) / len(px), sum(p[1] for p in px) / len(px),
                        sum(p[2] for p in px) / len(px))
    raise AssertionError(f"{path} has no frame at {at} s")


def near(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < 12


@pytest.mark.slow
def test_render_with_takes_bills_every_take_and_stitches_the_picked_one(tmp_path: Path) -> None:
    s = settings(tmp_path)
    result = api.render(BRIEF, model="local/sim", seconds=8, size="640x360", takes=3,
                        settings=s, output=tmp_path / "out.mp4")
    assert result.estimate_usd == Decimal("2.4") and result.cost_usd == Decimal("2.4")
    assert len(result.shots) == 2 and len(result.takes) == 4
    assert [(t["index"], t["take"], t["cost_usd"]) for t in result_json(result)["takes"]] == [
        (1, 2, "0.4"), (1, 3, "0.4"), (2, 2, "0.4"), (2, 3, "0.4")]
    journal = read_journal(tmp_path / "local" / "journal.jsonl", accepted_only=True)
    assert sorted(j["take"] for j in journal) == [1, 1, 2, 2, 3, 3]
    rows = _ledger(s)
    assert len(rows) == 6 and len({r["shot_key"] for r in rows}) == 6
    assert sum((Decimal(str(r["amount"])) for r in rows), Decimal(0)) == Decimal("2.4")
    db, store = api.open_store(s)
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(clips)).scalar() == 6
        view = lifecycle.describe(conn, result.render_id)
    assert view["status"] == "awaiting_review" and len(view["shots"]) == 2
    takes = view["shots"][1]["takes"]
    assert [(t["take"], t["picked"], t["cost_usd"]) for t in takes] == [
        (1, True, "0.4"), (2, False, "0.4"), (3, False, "0.4")]
    clip = {t["take"]: store.file(store.clip_name(t["key"])) for t in takes}
    # Shot 2 fills 4-8 s of the output: it shows take 1, not the others.
    assert near(corner(result.output, 6.0), corner(clip[1], 2.0))
    assert not near(corner(result.output, 6.0), corner(clip[2], 2.0))
    before = result.output.read_bytes()

    table = load_table(s.overrides_path)
    with pytest.raises(BriefError, match="shot 2 has no take 7"):
        actions.pick(db, s, table, None, result.render_id, 2, actions.PickRequest(take=7),
                     store=store, operator=True)
    with db.read() as conn:
        assert lifecycle.describe(conn, result.render_id) == view  # nothing changed
    picked = actions.pick(db, s, table, None, result.render_id, 2, actions.PickRequest(take=2),
                          store=store, operator=True)
    assert picked["status"] == "rendering"
    with pytest.raises(StateError, match="awaits review"):
        actions.pick(db, s, table, None, result.render_id, 2, actions.PickRequest(take=3),
                     store=store, operator=True)
    db.close()
    again = api.resume(result.render_id, settings=s, output=tmp_path / "picked.mp4")
    assert again.cost_usd == 0
    assert len(read_journal(tmp_path / "local" / "journal.jsonl")) == 6  # no vendor call
    assert len(_ledger(s)) == 6  # nothing billed, every take still in the ledger
    assert abs(again.seconds - 8) < 1 / 24
    assert near(corner(again.output, 6.0), corner(clip[2], 2.0))
    assert not near(corner(again.output, 6.0), corner(clip[1], 2.0))
    assert near(corner(again.output, 2.0), corner(result.output, 2.0))  # shot 1 unchanged
    assert again.output.read_bytes() != before
    db, _ = api.open_store(s)
    with db.read() as conn:
        view = lifecycle.describe(conn, result.render_id)
        plan = Plan.model_validate(conn.execute(sa.select(renders.c.plan).where(
            renders.c.id == result.render_id)).scalar())
    db.close()
    assert plan.shots[1].take == 2 and view["status"] == "awaiting_review"
    assert [(t["take"], t["picked"]) for t in view["shots"][1]["takes"]] == [
        (1, False), (2, True), (3, False)]
    assert view["cost_usd"] == "2.4"


def _journal(path: Path) -> list[dict[str, object]]:
    return read_journal(path) if path.exists() else []


@pytest.mark.slow
def test_takes_and_picks_over_the_api(stack: Callable[..., Any]) -> None:
    with stack() as server:
        api_ = server.client(server.new_key().key)
        journal = server.settings.journal_path
        body = {"brief": BRIEF, "seconds": 8, "model": "local/sim", "size": "640x360"}
        # Bad input: refused with what is allowed, and nothing is made, reserved or billed.
        over = api_.post("/v1/renders", json={**body, "takes": 5})
        assert over.status_code == 422, over.text
        assert "1 to 4 takes" in over.json()["error"]["message"]
        assert api_.post("/v1/renders", json={**body, "takes": 0}).status_code == 422
        assert api_.get("/v1/renders").json()["data"] == [] and _journal(journal) == []

        rid = api_.post("/v1/renders", json={**body, "takes": 3}).json()["id"]
        first = wait_status(api_, rid, "awaiting_review")
        assert first["estimate_usd"] == "2.4" and first["cost_usd"] == "2.4"
        assert len(api_.get("/v1/ledger").json()["data"]) == 6 and len(_journal(journal)) == 6
        takes = first["shots"][1]["takes"]
        assert [(t["take"], t["picked"], t["cost_usd"]) for t in takes] == [
            (1, True, "0.4"), (2, False, "0.4"), (3, False, "0.4")]
        assert all(api_.get(t["url"]).status_code == 200 for t in takes)
        assert first["shots"][0]["clip_url"] == first["shots"][0]["takes"][0]["url"]

        missing = api_.post(f"/v1/renders/{rid}/shots/2/pick", json={"take": 7})
        assert missing.status_code == 422
        assert "shot 2 has no take 7: its takes are 1, 2, 3" in missing.json()["error"]["message"]
        assert api_.post(f"/v1/renders/{rid}/shots/3/pick", json={"take": 1}).status_code == 422
        assert api_.post(f"/v1/renders/{rid}/shots/2/pick", json={"take": "x"}).status_code == 422
        assert api_.get(f"/v1/renders/{rid}").json() == first  # nothing changed

        picked = api_.post(f"/v1/renders/{rid}/shots/2/pick", json={"take": 3})
        assert picked.status_code == 202 and picked.json()["status"] == "rendering"
        busy = api_.post(f"/v1/renders/{rid}/shots/2/pick", json={"take": 2})
        assert busy.status_code == 409
        second = wait_status(api_, rid, "awaiting_review")
        assert second["shots"][1]["take"] == 3 and second["output_url"] != first["output_url"]
        assert [t["picked"] for t in second["shots"][1]["takes"]] == [False, False, True]
        assert len(_journal(journal)) == 6  # no vendor call
        assert len(api_.get("/v1/ledger").json()["data"]) == 6 and second["cost_usd"] == "2.4"

        over = api_.post(f"/v1/renders/{rid}/reroll", json={"shots": [1], "takes": 5})
        assert over.status_code == 422 and "1 to 4 takes" in over.json()["error"]["message"]
        assert api_.get(f"/v1/renders/{rid}").json() == second  # nothing changed
        rolled = api_.post(f"/v1/renders/{rid}/reroll", json={"shots": [1], "takes": 2})
        assert rolled.status_code == 202
        third = wait_status(api_, rid, "awaiting_review")
        assert [(t["take"], t["picked"]) for t in third["shots"][0]["takes"]] == [
            (4, True), (5, False)]
        assert third["shots"][1]["take"] == 3 and third["cost_usd"] == "3.2"
        assert len(api_.get("/v1/ledger").json()["data"]) == 8 and len(_journal(journal)) == 8
        assert api_.post(f"/v1/renders/{rid}/approve").json()["status"] == "published"
        assert api_.post(f"/v1/renders/{rid}/shots/2/pick", json={"take": 1}).status_code == 409


@pytest.mark.slow
def test_cli_estimate_reroll_with_takes_and_pick(tmp_path: Path) -> None:
    from .test_cli import run

    home = Path(os.environ["SHOTLINE_HOME"])
    journal = home / "local" / "journal.jsonl"
    brief = tmp_path / "kite.txt"
    brief.write_text(BRIEF)
    common = ["--model", "local/sim", "--seconds", "8", "--size", "640x360"]
    est = json.loads(run("estimate", str(brief), *common, "--takes", "3", "--json").stdout)
    assert est["cost_usd"] == "2.4" and [s["takes"] for s in est["shots"]] == [3, 3]
    too_many = run("render", str(brief), *common, "--takes", "9")
    assert too_many.returncode == 2 and "--takes" in too_many.stderr
    assert "9" in too_many.stderr and "1 to" in too_many.stderr
    assert not journal.exists()

    made = run("render", str(brief), *common, "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["takes"] == []
    rid = json.loads(made.stdout)["render_id"]
    assert len(read_journal(journal)) == 2
    rolled = run("reroll", rid, "--shot", "2", "--takes", "3", "--json")
    assert rolled.returncode == 0, rolled.stderr
    assert json.loads(rolled.stdout)["cost_usd"] == "1.2"  # three new takes of shot 2
    assert sorted(j["take"] for j in read_journal(journal)) == [1, 1, 2, 3, 4]
    s = Settings(home=home)
    shown = json.loads(run("show", rid, "--json").stdout)
    assert [(t["take"], t["picked"]) for t in shown["shots"][1]["takes"]] == [
        (2, True), (3, False), (4, False)]
    assert shown["cost_usd"] == "2" and len(_ledger(s)) == 5

    bad = run("pick", rid, "--shot", "2", "--take", "1")  # take 1 was re-rolled away
    assert bad.returncode == 2 and "shot 2 has no take 1: its takes are 2, 3, 4" in bad.stderr
    picked = run("pick", rid, "--shot", "2", "--take", "4", "--json")
    assert picked.returncode == 0, picked.stderr
    assert json.loads(picked.stdout)["cost_usd"] == "0"
    assert len(read_journal(journal)) == 5 and len(_ledger(s)) == 5  # no call, nothing billed
    after = json.loads(run("show", rid, "--json").stdout)
    assert after["status"] == "awaiting_review" and after["shots"][1]["take"] == 4


def test_the_live_display_names_each_take() -> None:
    plan = api.plan(BRIEF, model="local/sim", seconds=8, takes=3)
    sink = io.StringIO()
    display = RenderDisplay(plan, Console(file=sink, force_terminal=False, width=100))
    for index in (1, 2, 5, -1):
        display(ShotEvent(index, "done"))
    assert sink.getvalue().split("\n")[:4] == [
        "shot 2: done", "shot 1 take 2: done", "shot 2 take 3: done", "stitch: done"]


@pytest.mark.slow
def test_two_picks_at_once_one_wins(db_url: str, tmp_path: Path) -> None:
    s = settings(tmp_path / "h", database_url=db_url)
    made = api.render(BRIEF, model="local/sim", seconds=8, size="640x360", takes=2, settings=s,
                      output=tmp_path / "out.mp4")
    db, store = api.open_store(s)
    table = load_table(s.overrides_path)
    gate = threading.Barrier(2)

    def pick_one(shot: int) -> str:
        gate.wait()
        try:
            actions.pick(db, s, table, None, made.render_id, shot, actions.PickRequest(take=2),
                         store=store, operator=True)
        except StateError:
            return "refused"
        return "picked"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(pick_one, [1, 2]))
    assert outcomes == ["picked", "refused"]
    with db.read() as conn:
        plan = Plan.model_validate(conn.execute(sa.select(renders.c.plan).where(
            renders.c.id == made.render_id)).scalar())
        view = lifecycle.describe(conn, made.render_id)
    db.close()
    assert sorted(s.take for s in plan.shots) == [1, 2]  # exactly one pick took
    assert view["status"] == "rendering" and len(_ledger(s)) == 4
    again = api.resume(made.render_id, settings=s)
    assert again.cost_usd == 0 and len(_ledger(s)) == 4


@pytest.mark.slow
def test_the_quality_gate_leaves_a_shot_with_takes_to_the_reviewer(tmp_path: Path) -> None:
    # The "vendor" sends one take of shot 2 without the sound that was asked for.
    s = settings(tmp_path, local_faults="shot2:noaudio:x1", quality_reroll=True)
    result = api.render(BRIEF, model="local/sim", seconds=8, size="640x360", audio=True,
                        takes=2, settings=s)
    journal = read_journal(tmp_path / "local" / "journal.jsonl", accepted_only=True)
    assert sorted((j["index"], j["take"]) for j in journal) == [(0, 1), (1, 1), (2, 2), (3, 2)]
    assert [s.take for s in result.plan.shots] == [1, 1] and len(_ledger(s)) == 4
    # Shot 2's first take (submitted first) is the silent one: flagged, and not re-rolled.
    assert [(f.shot, f.kind) for f in result.flags] == [(2, "silent")]
