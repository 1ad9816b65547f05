from __future__ import annotations

import pytest

from shotline.core.brief import parse_brief
from shotline.errors import BriefError

from .conftest import example


def prompts(text: str) -> list[str]:
    return [s.prompt for s in parse_brief(text).segments]


def test_shot_list_with_style_preamble() -> None:
    text = example("bakery-shotlist.md").read_text()
    brief = parse_brief(text)
    assert brief.style and brief.style.startswith("warm tungsten light")
    assert len(brief.segments) == 5
    first = brief.segments[0]
    assert first.prompt.startswith("Before sunrise, a baker dusts")
    assert text[first.start : first.end].startswith("Shot 1:")
    assert all("Shot" not in s.prompt and "Style" not in s.prompt for s in brief.segments)


@pytest.mark.parametrize(
    "marker",
    ["Shot 3:", "SHOT 3 -", "Scene 3:", "SCENE 3 -", "3.", "3)", "-", "*", "**Shot 3:**"],
)
def test_every_shot_list_marker_is_a_boundary_and_is_markup(marker: str) -> None:
    text = f"{marker} A red kite rises.\n{marker} A blue kite falls.\n"
    assert prompts(text) == ["A red kite rises.", "A blue kite falls."]


def test_screenplay_headings_and_transitions() -> None:
    text = example("lighthouse-screenplay.txt").read_text()
    brief = parse_brief(text)
    assert len(brief.segments) == 3
    for seg in brief.segments:
        assert "CUT TO" not in seg.prompt and "EXT." not in seg.prompt and "INT." not in seg.prompt
    assert brief.segments[0].prompt.startswith("Exterior, rocky coast, night. A lighthouse beam")
    assert brief.segments[1].prompt.startswith("Interior, lamp room, night.")
    assert text[brief.segments[1].start :].startswith("INT. LAMP ROOM")


@pytest.mark.parametrize(
    "transition", ["CUT TO:", "DISSOLVE TO:", "SMASH CUT TO:", "MATCH CUT TO:", "FADE OUT."]
)
def test_transitions_split_shots(transition: str) -> None:
    text = f"FADE IN:\n\nA door opens.\n\n{transition}\n\nA cat walks in.\n"
    assert prompts(text) == ["A door opens.", "A cat walks in."]


def test_markdown_headings_and_rules() -> None:
    text = "# Teaser\n\n## Opening\nA foggy bridge.\n\n## Close\nThe sun breaks through.\n"
    assert prompts(text) == ["A foggy bridge.", "The sun breaks through."]
    assert prompts("A foggy bridge.\n\n---\n\nThe sun.\n***\nNight.") == [
        "A foggy bridge.", "The sun.", "Night.",
    ]
    # A heading with no body is itself the description.
    assert prompts("## A foggy bridge\n## The sun breaks through\n") == [
        "A foggy bridge", "The sun breaks through",
    ]


def test_timecodes_fix_durations_and_are_markup() -> None:
    brief = parse_brief(example("tea-timecoded.txt").read_text())
    assert [s.seconds for s in brief.segments] == [5, 6, 4, 5]
    assert all("00:" not in s.prompt for s in brief.segments)
    alt = parse_brief("(0:04–0:12) Water pours.\n(0:12–0:15.5) Steam rises.")
    assert [s.seconds for s in alt.segments] == [8, 3.5]
    assert [s.prompt for s in alt.segments] == ["Water pours.", "Steam rises."]


def test_backwards_timecode_is_an_error() -> None:
    with pytest.raises(BriefError, match="ends before it starts"):
        parse_brief("[00:10-00:04] Backwards.")


@pytest.mark.parametrize(
    ("line", "seconds"),
    [("A gull dives (5 s).", 5), ("A gull dives (5s).", 5), ("A gull dives — 6 seconds", 6),
     ("A gull dives [2.5 sec]", 2.5)],
)
def test_inline_duration_hints(line: str, seconds: float) -> None:
    brief = parse_brief(f"Shot 1: {line}\nShot 2: A boat.")
    assert brief.segments[0].seconds == seconds
    assert brief.segments[0].prompt.startswith("A gull dives")
    assert str(seconds).rstrip("0").rstrip(".") not in brief.segments[0].prompt


def test_paragraphs_and_single_block() -> None:
    assert prompts("A lake at dawn.\n\nA heron lands.\n\n\nMist lifts.") == [
        "A lake at dawn.", "A heron lands.", "Mist lifts.",
    ]
    brief = parse_brief("A lake at dawn. A heron lands.\nMist lifts.")
    assert brief.form == "prose" and len(brief.segments) == 1


def test_structured_yaml_and_json() -> None:
    text = example("bicycle-launch.yaml").read_text()
    brief = parse_brief(text)
    assert brief.title == "City bicycle launch"
    assert brief.seconds == 18 and brief.audio is True
    assert [s.seconds for s in brief.segments] == [None, 6, None]
    for seg in brief.segments:
        assert seg.prompt.split()[0] in text[seg.start : seg.end]
    js = parse_brief('{"style": "noir", "shots": [{"prompt": "Rain."}, {"prompt": "Neon.", "seconds": 3}]}')
    assert [s.prompt for s in js.segments] == ["Rain.", "Neon."] and js.style == "noir"


def test_structured_errors_say_what_is_allowed() -> None:
    with pytest.raises(BriefError, match="Allowed keys"):
        parse_brief("shots:\n  - prompt: A\n    secs: 4\n")
    with pytest.raises(BriefError, match="shots"):
        parse_brief("shots: []\n")


@pytest.mark.parametrize(
    "text",
    ["镜头1：一只猫在窗台上。\n镜头2：一只狗在草地上奔跑。", "Escena 1: Un gato.\nEscena 2: Un perro.",
     "1．猫。\n2．犬。"],
)
def test_other_languages(text: str) -> None:
    brief = parse_brief(text)
    assert len(brief.segments) == 2
    for seg in brief.segments:
        assert text[seg.start : seg.end].endswith(seg.prompt[-2:])


def test_offsets_count_code_points() -> None:
    text = "Shot 1: 🎬 Café crème.\nShot 2: Zoë waves."
    second = parse_brief(text).segments[1]
    assert text[second.start : second.end] == "Shot 2: Zoë waves."


@pytest.mark.parametrize("text", ["", "   \n\n", "Style: noir\n", "CUT TO:\n"])
def test_empty_briefs_are_errors(text: str) -> None:
    with pytest.raises(BriefError):
        parse_brief(text)
