"""Continuations: a shot that starts from the last frame of the shot before.

Marked in every brief form, planned where the model takes a first frame (and said why not
where it does not), keyed on the key of the shot before, and rendered offline in order: the
second call carries the first clip's last frame, and the join is no bigger a change than
the changes between neighbouring frames inside the shots.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from shotline.api import open_store, render
from shotline.cli import chain_line, plan_json
from shotline.core.brief import parse_brief
from shotline.core.capabilities import load_table
from shotline.core.keys import planned_key
from shotline.core.planner import Plan, PlanOptions, plan
from shotline.core.takes import check_unchained
from shotline.engine.media import frame_png
from shotline.engine.renderer import RenderFailed
from shotline.errors import BriefError
from shotline.providers.local import read_journal
from shotline.settings import Settings
from shotline.store import images

from .service import wait_status

TABLE = load_table(None)
PAIR = "Shot 1: A gull dives over the harbour.\nShot 2 (continues): It lands on the pier.\n"


def planned(text: str, model: str = "local/sim", **opts: object) -> Plan:
    return plan(parse_brief(text), TABLE.get(model), PlanOptions(**opts))  # type: ignore[arg-type]


def keys(p: Plan, model: str = "local/sim") -> list[str]:
    return [planned_key(p, s, TABLE.get(model)) for s in p.shots]


# --- marking --------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    PAIR,
    "Shot 1: A gull dives over the harbour.\nShot 2: (continuous) It lands on the pier.\n",
    "## Shot 1\nA gull dives over the harbour.\n## Shot 2 (continues)\nIt lands on the pier.\n",
    "A gull dives over the harbour.\n\nIt lands on the pier. (continues)\n",
    "EXT. HARBOUR - DAWN\nA gull dives over the harbour.\n\n"
    "EXT. PIER - CONTINUOUS\nIt lands on the pier.\n",
    "shots:\n  - prompt: A gull dives over the harbour.\n"
    "  - prompt: It lands on the pier.\n    continues: true\n",
    '{"shots": [{"prompt": "A gull dives over the harbour."}, '
    '{"prompt": "It lands on the pier.", "continues": true}]}',
])
def test_every_brief_form_marks_a_continuation(text: str) -> None:
    segments = parse_brief(text).segments
    assert [s.continues for s in segments] == [False, True]
    # The mark is markup: it never reaches the prompt.
    assert "contin" not in segments[1].prompt.lower()
    assert segments[1].prompt.endswith("It lands on the pier.")


def test_unmarked_shots_and_dialogue_contd_do_not_continue() -> None:
    brief = parse_brief("Shot 1: A gull dives.\nShot 2: It lands.\n")
    assert [s.continues for s in brief.segments] == [False, False]
    # (CONT'D) after a character cue is the same character speaking on, not a continuation.
    screenplay = parse_brief("INT. KITCHEN - NIGHT\nMaya cooks.\n\nINT. HALL - NIGHT\n"
                             "MAYA (CONT'D)\nStill hungry.\n")
    assert [s.continues for s in screenplay.segments] == [False, False]


def test_bad_marks_are_refused_with_the_fix() -> None:
    with pytest.raises(BriefError, match="shot 1 .*first shot"):
        parse_brief("Shot 1 (continues): A gull dives.\nShot 2: It lands.\n")
    with pytest.raises(BriefError, match="shot 2 continues .* cannot also start from pier.png"):
        parse_brief("shots:\n  - prompt: A gull.\n  - prompt: It lands.\n"
                    "    continues: true\n    first_frame: pier.png\n")


# --- planning -------------------------------------------------------------------------


def test_marked_shots_and_split_pieces_chain_where_the_model_takes_a_first_frame() -> None:
    p = planned(PAIR + "Shot 3: A boat leaves.\n", seconds=12)
    assert [s.continues for s in p.shots] == [False, True, False]
    assert p.chains() == [(0, 1)]
    # One long shot split at sentence ends: its pieces chain, in order.
    long = planned("A gull dives over the harbour. It skims the water. It lands on the pier.",
                   seconds=20)
    assert len(long.shots) == 3
    assert [s.continues for s in long.shots] == [False, True, True]
    assert long.chains() == [(0, 1, 2)]
    data = plan_json(long)
    assert data["chains"] == [[1, 2, 3]] and data["renders_in_a_row"] == 3
    assert "3 render times in a row instead of 1" in chain_line(long.chains())


def test_no_chain_and_models_without_first_frames_say_why_per_shot() -> None:
    off = planned(PAIR, chain=False)
    assert not any(s.continues for s in off.shots) and off.chains() == []
    assert off.shots[1].chain_note is not None and "--no-chain" in off.shots[1].chain_note
    assert off.shots[0].chain_note is None  # nothing to chain: nothing to explain
    veo = planned(PAIR, "fal/veo3-fast")
    assert not TABLE.get("fal/veo3-fast").takes("first_frame")
    assert not any(s.continues for s in veo.shots)
    assert veo.shots[1].chain_note is not None and "takes no first frame" in veo.shots[1].chain_note


def test_plan_and_estimate_show_chains_and_no_chain_turns_them_off() -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shotline", *args, "--text", PAIR,
                               "--model", "local/sim"], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "COLUMNS": "200"})

    on = json.loads(cli("plan", "--json").stdout)
    assert on["chains"] == [[1, 2]] and on["renders_in_a_row"] == 2
    assert [s["continues"] for s in on["shots"]] == [False, True]
    off = json.loads(cli("estimate", "--no-chain", "--json").stdout)
    assert off["chains"] == [] and off["renders_in_a_row"] == 1
    assert "--no-chain" in off["shots"][1]["chain_note"]
    table = cli("plan").stdout
    assert "chains: 1→2" in table and "about 2 render times in a row" in table
    assert "starts from shot 1's last frame" in table
    veo = subprocess.run([sys.executable, "-m", "shotline", "plan", "--text", PAIR, "--model",
                          "fal/veo3-fast"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"}).stdout
    assert "chains:" not in veo and "takes no first frame" in veo


# --- keys -----------------------------------------------------------------------------


def test_a_continuations_key_follows_the_shot_before_and_nothing_else_moves() -> None:
    three = PAIR + "Shot 3: A boat leaves.\n"
    base = keys(planned(three, seconds=12))
    edited = keys(planned(three.replace("gull dives", "gull swoops"), seconds=12))
    assert edited[0] != base[0]
    assert edited[1] != base[1]  # continues shot 1: its first frame is another picture
    assert edited[2] == base[2]  # unchained: untouched
    # Editing the continuation itself leaves the shot before alone.
    later = keys(planned(three.replace("lands on", "perches on"), seconds=12))
    assert later[0] == base[0] and later[1] != base[1] and later[2] == base[2]


def test_unchained_keys_are_as_before_and_no_chain_keys_like_unmarked() -> None:
    unmarked = PAIR.replace(" (continues)", "")
    plain = keys(planned(unmarked))
    assert keys(planned(PAIR, chain=False)) == plain
    chained = keys(planned(PAIR))
    assert chained[0] == plain[0] and chained[1] != plain[1]
    # A new take of shot 1 (a re-roll) gives shot 2 a new key too.
    p = planned(PAIR)
    retake = p.model_copy(update={"shots": (p.shots[0].model_copy(update={"take": 2}),
                                            p.shots[1])})
    assert keys(retake)[1] != chained[1]


# --- rendering offline ------------------------------------------------------------------


def frames_of(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [f.to_image() for f in container.decode(video=0)]  # type: ignore[no-untyped-call]


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two frames, over every pixel and channel (0..255)."""
    return statistics.fmean(ImageStat.Stat(ImageChops.difference(a, b)).mean)


@pytest.mark.slow
def test_a_continuation_pair_renders_offline_from_the_first_clips_last_frame(
        tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    result = render(PAIR, settings=settings, model="local/sim", size="640x360", seconds=8,
                    output=tmp_path / "out.mp4")
    p = result.plan
    assert [s.continues for s in p.shots] == [False, True]
    lines = read_journal(settings.journal_path, accepted_only=True)
    assert len(lines) == 2
    first, second = lines  # in order: the continuation waited for the first clip
    assert first["first_frame"] is None
    # The second call carries the first clip's last frame, cut from the stored clip.
    clip = result.shots[0].clip
    assert clip is not None
    data, width, height = frame_png(clip, (p.shots[0].frames - 1) / p.fps)
    assert (width, height) == (640, 360)
    assert second["first_frame"] == "sha256:" + hashlib.sha256(data).hexdigest()
    # The join: no bigger a change than the median change between neighbours inside a shot.
    frames = frames_of(result.output)
    n = p.shots[0].frames
    assert len(frames) == n + p.shots[1].frames
    inside = [difference(frames[i], frames[i + 1]) for i in range(len(frames) - 1)
              if i != n - 1]
    join = difference(frames[n - 1], frames[n])
    print(f"join {join:.3f}, median inside {statistics.median(inside):.3f}")
    assert join <= statistics.median(inside)
    # Without the chain the same brief cuts hard at the join (a new picture).
    plain = render(PAIR, settings=settings, model="local/sim", size="640x360", seconds=8,
                   chain=False, output=tmp_path / "plain.mp4")
    cut = frames_of(plain.output)
    assert difference(cut[n - 1], cut[n]) > 5 * statistics.median(inside)


@pytest.mark.slow
def test_a_failed_shot_fails_its_continuation_without_a_call_and_a_rerun_resumes(
        tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", local_faults="shot1:moderation:x1",
                        poll_interval=0.05, backoff_base=0.05)
    with pytest.raises(RenderFailed, match="shot 2: it continues shot 1, which failed") as info:
        render(PAIR + "Shot 3: A boat leaves.\n", settings=settings, model="local/sim",
               size="640x360", seconds=12, output=tmp_path / "out.mp4")
    assert [s.clip is not None for s in info.value.shots] == [False, False, True]
    journal = read_journal(settings.journal_path)
    assert sorted(line["index"] for line in journal) == [0, 2]  # shot 2 was never sent
    # Once the vendor recovers, running it again makes shots 1 and 2, in order; 3 is stored.
    again = render(PAIR + "Shot 3: A boat leaves.\n", settings=settings, model="local/sim",
                   size="640x360", seconds=12, output=tmp_path / "out.mp4")
    assert [s.cached for s in again.shots] == [False, False, True]
    made = [line for line in read_journal(settings.journal_path, accepted_only=True)
            if line["index"] in (0, 1)]
    assert [line["index"] for line in made] == [0, 1] and made[1]["first_frame"] is not None


# --- the service, embedded and scaled out (Celery) ---------------------------------------


@pytest.mark.slow
def test_the_service_renders_a_chain_in_order_and_a_reroll_remakes_its_successor(
        stack: Callable[..., Any]) -> None:
    with stack() as server:
        api = server.client(server.new_key().key)
        rid = api.post("/v1/renders", json={"brief": PAIR + "Shot 3: A boat leaves.\n",
                                            "seconds": 12, "model": "local/sim",
                                            "size": "640x360"}).json()["id"]
        first = wait_status(api, rid, "awaiting_review")
        assert [s["continues"] for s in first["shots"]] == [False, True, False]
        journal = read_journal(server.settings.journal_path, accepted_only=True)
        by_index = {line["index"]: line for line in journal}
        assert sorted(by_index) == [0, 1, 2]
        # Shot 2 went after shot 1's clip was made: it carries that clip's last frame.
        frame = by_index[1]["first_frame"]
        assert frame is not None and by_index[0]["first_frame"] is None
        assert by_index[2]["first_frame"] is None
        assert journal.index(by_index[1]) > journal.index(by_index[0])
        # Takes of a shot in a chain are refused: shot 2 starts from one take's last frame.
        for shot in (1, 2):
            refused = api.post(f"/v1/renders/{rid}/reroll", json={"shots": [shot], "takes": 2})
            assert refused.status_code == 422 and "--no-chain" in refused.text, refused.text
        assert api.get(f"/v1/renders/{rid}").json()["status"] == "awaiting_review"
        assert len(read_journal(server.settings.journal_path, accepted_only=True)) == 3
        db, _ = open_store(server.settings)
        try:
            assert images.load(db, [frame])  # stored like any input image, by its bytes
        finally:
            db.close()
        # A re-roll of shot 1 makes shot 2 again (from the new take's last frame), not shot 3.
        assert api.post(f"/v1/renders/{rid}/reroll", json={"shots": [1]}).status_code == 202
        second = wait_status(api, rid, "awaiting_review")
        journal = read_journal(server.settings.journal_path, accepted_only=True)
        assert sorted(line["index"] for line in journal) == [0, 0, 1, 1, 2]
        again = journal[3:]
        assert [line["index"] for line in again] == [0, 1]
        assert again[1]["first_frame"] not in (None, frame)
        assert second["output_url"] != first["output_url"]


def test_takes_turn_chains_off_and_say_why() -> None:
    """Several takes of the shot before leave a continuation nothing single to start from."""
    p = planned(PAIR, seconds=8, takes=3)
    assert not any(s.continues for s in p.shots) and p.chains() == []
    assert p.shots[1].chain_note is not None and "--takes 3" in p.shots[1].chain_note
    assert [len(s.takes) for s in p.shots] == [3, 3]
    chained = planned(PAIR, seconds=8)
    for number in (1, 2):
        with pytest.raises(BriefError, match="cannot have takes"):
            check_unchained(chained, number)
    check_unchained(planned(PAIR, seconds=8, chain=False), 1)  # no chain: takes are fine


def test_no_chain_is_an_api_option_and_refuses_a_non_boolean(tmp_path: Path) -> None:
    from shotline.service.actions import RenderRequest

    assert RenderRequest(brief=PAIR).chain is True
    assert RenderRequest(brief=PAIR, chain=False).chain is False
    with pytest.raises(ValueError, match="chain"):
        RenderRequest.model_validate({"brief": PAIR, "chain": "sometimes"})
