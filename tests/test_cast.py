"""A brief's cast and image inputs, as written (brief.py) and as planned (cast.py, planner.py).

Pure: images are given to the planner as :class:`ImageRef` (what the library would have
read), so every rule is checked without a file or a network.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from shotline.core.brief import Brief, CastMember, ImageRef, parse_brief
from shotline.core.capabilities import load_table
from shotline.core.cast import choose, members_in, mentioned
from shotline.core.keys import planned_key, shot_key
from shotline.core.planner import Plan, PlanOptions, plan
from shotline.errors import BriefError, CapabilityError

TABLE = load_table()

TEXT = """Title: Harbor morning
Style: 35mm film

Cast:
- **Maya** (character): a woman in her thirties with short red hair. Images: maya.png, \
https://example.com/maya-side.jpg
- Leo: a grey-bearded fisherman ![](leo.png)
  He wears a blue knit cap.

Shot 1: Maya walks along the pier at dawn. (first frame: pier.png)
Shot 2: Leo hauls a net (5 s).
Last frame: net.png
Shot 3: The boat leaves the harbor.
Cast: maya
Shot 4: Gulls circle.
"""


def read(brief: Brief) -> Brief:
    """``brief`` as the library leaves it: each image known by a (made-up) hash of bytes."""
    refs = {src: ImageRef(sha256="sha256:" + hashlib.sha256(src.encode()).hexdigest(),
                          mime="image/png", width=320, height=320, bytes=100)
            for src in brief.image_sources()}
    return dataclasses.replace(brief, images=refs)


def sha(source: str) -> str:
    return "sha256:" + hashlib.sha256(source.encode()).hexdigest()


def planned(text: str, model: str = "local/sim", **opts: object) -> Plan:
    return plan(read(parse_brief(text)), TABLE.get(model), PlanOptions(yes=True, **opts))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parsing


def test_a_cast_block_in_text_is_members_not_shots() -> None:
    brief = parse_brief(TEXT)
    assert brief.cast == (
        CastMember("Maya", "a woman in her thirties with short red hair.",
                   ("maya.png", "https://example.com/maya-side.jpg"), "character"),
        CastMember("Leo", "a grey-bearded fisherman. He wears a blue knit cap.", ("leo.png",)),
    )
    assert [s.prompt for s in brief.segments] == [
        "Maya walks along the pier at dawn.", "Leo hauls a net.", "The boat leaves the harbor.",
        "Gulls circle."]
    first, second, third, _ = brief.segments
    assert (first.first_frame, first.last_frame, first.cast) == ("pier.png", None, None)
    assert (second.last_frame, second.seconds) == ("net.png", 5)  # a hint is still read
    assert third.cast == ("Maya",)  # listed in any case, spelled as the cast spells it
    assert brief.title == "Harbor morning" and brief.style == "35mm film"
    assert brief.image_sources() == ["maya.png", "https://example.com/maya-side.jpg",
                                     "leo.png", "pier.png", "net.png"]


def test_markdown_cast_heading_and_paragraph_shots() -> None:
    text = ("## Cast\n\n- **Maya**: a woman in a yellow raincoat\n"
            "- **Leo** — a fisherman\n  images: leo.png; leo-2.png\n\n"
            "Maya walks.\n\nLeo waves. (last frame: end.jpg)\n")
    brief = parse_brief(text)
    assert [(m.name, m.description, m.images) for m in brief.cast] == [
        ("Maya", "a woman in a yellow raincoat", ()),
        ("Leo", "a fisherman", ("leo.png", "leo-2.png"))]
    assert brief.form == "paragraphs"  # the cast's bullets do not make it a shot list
    assert [(s.prompt, s.last_frame) for s in brief.segments] == [
        ("Maya walks.", None), ("Leo waves.", "end.jpg")]


def test_a_cast_word_without_members_under_it_is_an_ordinary_line() -> None:
    brief = parse_brief("Cast\n\nA fishing net flies over the water.\n")
    assert brief.cast == () and len(brief.segments) >= 1


def test_yaml_and_json_casts() -> None:
    yaml_text = """cast:
  Maya:
    description: a woman in a yellow raincoat
    images: [maya.png, maya-2.png]
    kind: character
  Leo: a fisherman
shots:
  - prompt: Maya walks.
    first_frame: pier.png
    last_frame: end.png
  - prompt: Leo runs.
    cast: [maya, LEO]
  - prompt: Nobody here.
    cast: []
"""
    brief = parse_brief(yaml_text)
    assert brief.cast == (CastMember("Maya", "a woman in a yellow raincoat",
                                     ("maya.png", "maya-2.png"), "character"),
                          CastMember("Leo", "a fisherman"))
    assert [(s.first_frame, s.last_frame, s.cast) for s in brief.segments] == [
        ("pier.png", "end.png", None), (None, None, ("Maya", "Leo")), (None, None, ())]
    json_text = ('{"cast": {"Maya": {"description": "a woman", "images": "m.png"}}, '
                 '"shots": [{"prompt": "Maya walks.", "first_frame": "f.png"}]}')
    assert parse_brief(json_text).cast == (CastMember("Maya", "a woman", ("m.png",)),)


@pytest.mark.parametrize(("text", "words"), [
    ("Cast:\n- Maya: a woman\n\nShot 1: Maya walks.\nCast: Mia\n", ["'Mia'", "defined: Maya"]),
    ("Cast:\n- Maya: a woman\n- maya: another\n\nShot 1: Maya walks.\n", ["defined twice"]),
    ("cast:\n  Maya: {description: ''}\nshots: [{prompt: A walk.}]\n", ["description"]),
    ("cast: [Maya]\nshots: [{prompt: A walk.}]\n", ["cast:", "NAME: description"]),
    ("shots: [{prompt: A walk., first_frames: a.png}]\n", ["first_frame?"]),
    ("Shot 1: A walk.\nFirst frame: a.png\nFirst frame: b.png\n", ["first frame twice"]),
    ("Shot 1: A walk. (first frame: a.png) (start image: b.png)\n", ["first frame twice"]),
])
def test_bad_casts_and_directives_say_what_is_wrong(text: str, words: list[str]) -> None:
    with pytest.raises(BriefError) as caught:
        parse_brief(text)
    for word in words:
        assert word in str(caught.value)


def test_directives_are_never_part_of_a_prompt() -> None:
    brief = parse_brief("- Maya walks (first frame: a.png) along the pier [last frame: b.png].\n"
                        "- Leo waves.\n")
    first = brief.segments[0]
    assert first.prompt == "Maya walks along the pier."
    assert (first.first_frame, first.last_frame) == ("a.png", "b.png")
    assert brief.segments[1].first_frame is None


# --------------------------------------------------------------------------- naming


@pytest.mark.parametrize(("text", "name", "found"), [
    ("Maya's coat is wet.", "Maya", True),
    ("MAYA runs.", "maya", True),
    ("The Mayan temple.", "Maya", False),
    ("Captain  Reyes salutes.", "Captain Reyes", True),
    ("Reyes salutes.", "Captain Reyes", False),
    ("小明走进房间。", "小明", True),
])
def test_a_name_is_matched_in_any_case_on_word_boundaries(text: str, name: str,
                                                          found: bool) -> None:
    assert (mentioned(text, name) is not None) == found


def test_members_come_in_order_of_mention_unless_listed() -> None:
    brief = parse_brief("Cast:\n- Maya: a woman\n- Leo: a man\n\n"
                        "Shot 1: Leo hands Maya a cup.\nShot 2: Maya and Leo.\nCast: Leo\n")
    assert [m.name for m in members_in(brief.segments[0], brief.cast)] == ["Leo", "Maya"]
    assert [m.name for m in members_in(brief.segments[1], brief.cast)] == ["Leo"]


# --------------------------------------------------------------------------- planning


def test_descriptions_go_into_the_prompts_of_the_shots_that_show_them() -> None:
    p = planned(TEXT)
    one, two, three, four = p.shots
    assert one.prompt == ("Maya walks along the pier at dawn. Maya: a woman in her thirties "
                          "with short red hair. Style: 35mm film")
    assert two.cast == ("Leo",) and "He wears a blue knit cap." in two.prompt
    assert three.cast == ("Maya",) and "Leo" not in three.prompt
    assert four.cast == () and four.prompt == "Gulls circle. Style: 35mm film"
    assert [e.name for e in p.cast] == ["Maya", "Leo"]
    assert p.cast[0].images[1].source == "https://example.com/maya-side.jpg"


def test_a_shot_without_cast_or_images_keys_as_before() -> None:
    p = planned("Shot 1: Gulls circle.\n")
    shot = p.shots[0]
    caps = TABLE.get("local/sim")
    assert planned_key(p, shot, caps) == shot_key(
        provider="local", model="local/sim", prompt=shot.prompt, seconds=shot.seconds,
        size=p.size, fps=p.fps, audio=shot.audio, seed=p.seed, take=1, images=[])


def test_references_round_robin_up_to_the_cap_with_a_note() -> None:
    members = [CastMember("Maya", "a", ("m1", "m2", "m3")), CastMember("Leo", "b", ("l1",))]
    sim = TABLE.get("local/sim")  # 4 references
    chosen = choose(members, sim, seconds=4, first_frame=False, last_frame=False)
    assert chosen.references == (("Maya", "m1"), ("Leo", "l1"), ("Maya", "m2"), ("Maya", "m3"))
    assert chosen.note is None
    veo = TABLE.get("google/veo-3.1-generate-001")  # 3 references
    chosen = choose([*members, CastMember("Ana", "c", ("a1",))], veo, seconds=8,
                    first_frame=False, last_frame=False)
    assert chosen.references == (("Maya", "m1"), ("Leo", "l1"), ("Ana", "a1"))
    assert chosen.note == "3 of 5 reference images sent; google/veo-3.1-generate-001 takes at most 3 a call"
    kling = TABLE.get("fal/kling-video-v3-pro")
    chosen = choose([CastMember(n, "d", (n,)) for n in "ABCD"], kling, seconds=5,
                    first_frame=True, last_frame=False)
    assert [n for n, _ in chosen.references] == ["A", "B", "C"]
    assert chosen.note and chosen.note.startswith("D: description only")


def test_a_picture_two_members_share_is_sent_once() -> None:
    members = [CastMember("Maya", "a", ("both.png",)), CastMember("Leo", "b", ("both.png",))]
    chosen = choose(members, TABLE.get("local/sim"), seconds=4, first_frame=False,
                    last_frame=False)
    assert chosen.references == (("Maya", "both.png"),)


@pytest.mark.parametrize(("model", "seconds", "first", "why"), [
    ("runway/gen4.5", 5, False, "takes no reference images"),
    ("google/veo-3.1-generate-001", 8, True, "only without a first or last frame"),
    ("google/veo-3.1-generate-001", 6, False, "only on 8 s calls; this call is 6 s"),
    ("fal/kling-video-v3-pro", 5, False, "only with a first frame"),
    ("byteplus/dreamina-seedance-2-0-260128", 5, True, "only without a first or last frame"),
])
def test_a_model_that_cannot_take_the_pictures_gets_descriptions_and_a_note(
        model: str, seconds: int, first: bool, why: str) -> None:
    chosen = choose([CastMember("Maya", "a", ("m.png",))], TABLE.get(model), seconds=seconds,
                    first_frame=first, last_frame=False)
    assert chosen.references == ()
    assert chosen.note is not None and chosen.note.startswith(f"description only: {model} ")
    assert why in chosen.note


def test_the_plan_says_per_shot_when_pictures_stay_home() -> None:
    text = ("Cast:\n- Maya: a woman. Images: m.png\n- Leo: a man\n\n"
            "Shot 1: Maya walks.\nShot 2: Leo waves.\nShot 3: Gulls.\n")
    p = planned(text, "runway/gen4.5", seconds=15)
    assert [s.references_note for s in p.shots] == [
        "description only: runway/gen4.5 takes no reference images", None, None]
    assert [s.cast for s in p.shots] == [("Maya",), ("Leo",), ()]
    assert "Maya: a woman." in p.shots[0].prompt and "Leo: a man" in p.shots[1].prompt


def test_frames_go_to_the_first_and_last_call_of_a_split_shot() -> None:
    text = ("Shot 1: Maya boards. She sits. She reads. She sleeps. (32 s)\n"
            "First frame: a.png\nLast frame: b.png\n")
    p = planned(text, "local/sim")  # 8 s calls: the shot is split four ways
    assert [s.first_frame.source if s.first_frame else None for s in p.shots] == \
        ["a.png", None, None, None]
    assert [s.last_frame.source if s.last_frame else None for s in p.shots] == \
        [None, None, None, "b.png"]


def test_a_model_without_first_frames_refuses_a_brief_that_asks_for_one() -> None:
    with pytest.raises(CapabilityError) as caught:
        planned("Shot 1: A walk.\nFirst frame: a.png\n", "fal/veo3-fast")
    assert "shot 1 starts from a.png" in str(caught.value)
    assert "takes no first frame" in str(caught.value)
    with pytest.raises(CapabilityError, match="shot 2 ends on b.png.*takes no last frame"):
        planned("Shot 1: A walk.\nShot 2: A run.\nLast frame: b.png\n", "runway/gen4.5",
                seconds=10)


def test_images_must_be_read_before_planning() -> None:
    with pytest.raises(BriefError, match="has not been read"):
        plan(parse_brief("Shot 1: A walk.\nFirst frame: a.png\n"), TABLE.get("local/sim"))


def test_keys_cover_the_images_bytes_and_role() -> None:
    caps = TABLE.get("local/sim")
    p = planned(TEXT, "local/sim")
    one = p.shots[0]
    base = planned_key(p, one, caps)
    other = one.model_copy(update={"references": one.references[:1]})
    assert planned_key(p, other, caps) != base
    swapped = one.model_copy(update={"first_frame": one.first_frame.model_copy(  # type: ignore[union-attr]
        update={"sha256": sha("elsewhere")})})
    assert planned_key(p, swapped, caps) != base
    renamed = one.model_copy(update={"first_frame": one.first_frame.model_copy(  # type: ignore[union-attr]
        update={"source": "renamed.png"})})
    assert planned_key(p, renamed, caps) == base
