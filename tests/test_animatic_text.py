"""The free animatic draws any script: every character it draws is in the character map of
the font it is drawn with (checked here with fontTools, independently of the renderer),
and the text shows up as pixels on the card and in the encoded video."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from shotline.providers.local_render import (
    Face,
    Look,
    Text,
    canvas,
    drift,
    faces_for,
    prompt_lines,
    render,
    right_to_left,
)

PROMPTS = {
    "spanish": "Un niño corre por la playa al amanecer — ¡qué alegría! Señales, acción.",
    "chinese": "一只猫在窗台上睡觉。阳光照在玻璃大楼上，街道上开始有人走动。",
    "arabic": "منارة في الليل. الأمواج تتكسر على الصخور.",
    "hebrew": "ילד רץ בשדה. כלב נובח.",
    "greek-cyrillic-korean-japanese": "Ένας γλάρος βουτά. Кот спит. 고양이가 잔다. ねこがねる。",
}


def look(prompt: str, width: int = 640, height: int = 360, seconds: int = 1) -> Look:
    return Look(prompt=prompt, number=1, model="local/preview", seed=None, take=1,
                seconds=seconds, width=width, height=height, fps=24, audio=False)


def cmap(face: Face) -> set[int]:
    font = TTFont(face.path, fontNumber=face.index)
    try:
        return set(font.getBestCmap())
    finally:
        font.close()


def body_box(card: Look) -> tuple[int, int, int, int]:
    """Where the prompt is drawn on the still canvas (inside the panel, below the title)."""
    w, h = round(card.width * 0.75), round(card.height * 0.62)
    x0, y0 = round(card.width * 0.05) + drift(card), round(card.height * 0.08)
    pad = max(4, round(h * 0.07))
    top = y0 + pad + round(card.height * 0.075 * 1.6)
    return x0 + pad, top, x0 + w - pad, y0 + h - pad


def white(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    data = image.convert("RGB").crop(box).tobytes()
    return sum(1 for i in range(0, len(data), 3) if min(data[i:i + 3]) > 200)


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_every_character_drawn_has_a_glyph_in_its_font(name: str) -> None:
    card = look(PROMPTS[name])
    body = Text(20, faces_for(card.prompt))
    lines = prompt_lines(card, body, 440, 4)
    drawn = "".join(run for line in lines for _, run in body.runs(line))
    assert "?" not in drawn  # no character fell back to the stand-in
    maps: dict[Face, set[int]] = {}
    for line in lines:
        for face, run in body.runs(line):
            have = maps.setdefault(face, cmap(face))
            missing = [c for c in run if ord(c) not in have]
            assert not missing, (face.name, missing)
    # Glyphs, not boxes: distinct letters draw distinct shapes.
    letters = {c for c in drawn if not c.isspace()}
    shapes = {bytes(body.font(body.face_of(c) or body.faces[0]).getmask(c)) for c in letters}
    assert len(shapes) >= len(letters) - 2  # a couple of look-alikes at most (e.g. "." "。")


def test_scripts_use_the_fonts_made_for_them() -> None:
    body = Text(20, faces_for(PROMPTS["chinese"] + PROMPTS["arabic"] + PROMPTS["hebrew"]))
    assert body.face_of("猫").name == "Noto Sans CJK SC"  # type: ignore[union-attr]
    assert body.face_of("ن").name == "Noto Sans Arabic"  # type: ignore[union-attr]
    assert body.face_of("ש").name == "Noto Sans Hebrew"  # type: ignore[union-attr]
    assert body.face_of("ñ").name == "Noto Sans"  # type: ignore[union-attr]
    assert Text(20, faces_for("ねこ")).face_of("猫").name == "Noto Sans CJK JP"  # type: ignore[union-attr]
    assert Text(20).runs("\U000f0000") == [(body.faces[0], "?")]  # private use: no font has it


def test_right_to_left_text_is_joined_and_in_visual_order() -> None:
    card = look("منارة في الليل")
    assert right_to_left(card.prompt) and not right_to_left("A lighthouse, منارة")
    [line] = prompt_lines(card, Text(20, faces_for(card.prompt)), 600, 2)
    assert line[-1] in "ﻣﻢم" and line[0] in "ﻞﻟﻠل"  # first letter drawn rightmost, joined forms
    assert any(0xFE70 <= ord(c) <= 0xFEFF for c in line)  # contextual (joined) forms


def test_chinese_wraps_between_characters() -> None:
    text = "一只猫在窗台上睡觉。" * 6
    body = Text(20, faces_for(text))
    lines = prompt_lines(look(text), body, 200, 10)
    assert len(lines) > 2 and all(body.getlength(line) <= 200 for line in lines)
    assert "".join(lines) == text


@pytest.mark.parametrize("name", ["spanish", "chinese", "arabic"])
def test_the_card_shows_the_text(name: str) -> None:
    card = look(PROMPTS[name])
    image = canvas(card)
    x0, top, x1, bottom = body_box(card)
    line_h = round(card.height * 0.055 * 1.25)
    text_rows = white(image, (x0, top, x1, top + line_h * 2))
    assert text_rows > 0.03 * (x1 - x0) * line_h * 2  # strokes cover a good part of the lines
    assert white(image, (x0, bottom - line_h, x1, bottom)) == 0  # and nothing below them


@pytest.mark.slow
@pytest.mark.parametrize("name", ["spanish", "chinese", "arabic"])
def test_the_animatic_frames_show_the_text(tmp_path: Path, name: str) -> None:
    card = look(PROMPTS[name], width=320, height=180)
    dest = tmp_path / f"{name}.mp4"
    render(card, dest)
    blank = look(".", width=320, height=180)
    render(blank, tmp_path / "blank.mp4")

    def first_frame(path: Path) -> Image.Image:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_image()  # type: ignore[no-any-return,no-untyped-call]

    x0, top, x1, _ = body_box(card)
    box = (x0, top, x1, top + round(180 * 0.055 * 1.25) * 2)  # frame 0 shows the canvas from x 0
    assert white(first_frame(dest), box) > 5 * max(1, white(first_frame(tmp_path / "blank.mp4"), box))
