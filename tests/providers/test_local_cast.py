"""The offline ``local`` provider honours a cast and image inputs, as a vendor would.

It draws each reference image as a labelled thumbnail and the cast's names on the card,
starts from a given first frame and ends on a given last one; and a 4-shot brief with a
two-person cast renders end to end with every call's references in the journal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from shotline.api import render
from shotline.providers.local import read_journal
from shotline.providers.local_render import Look, canvas, drift
from shotline.providers.local_render import render as draw
from shotline.settings import Settings

from ..images import png

RED, BLUE, GREEN, YELLOW = (200, 30, 30), (30, 40, 210), (40, 160, 60), (240, 220, 20)


def look(**kw: object) -> Look:
    base = dict(prompt="Maya walks along the pier.", number=1, model="local/sim", seed=None,
                take=1, seconds=2, width=640, height=360, fps=24, audio=False)
    return Look(**{**base, **kw})  # type: ignore[arg-type]


def colour_at(image: Image.Image, box: tuple[int, int, int, int]) -> list[float]:
    return ImageStat.Stat(image.crop(box).convert("RGB")).mean


def near(got: list[float], want: tuple[int, int, int], tolerance: float = 12) -> bool:
    return all(abs(g - w) <= tolerance for g, w in zip(got, want, strict=True))


def present(image: Image.Image, colour: tuple[int, int, int]) -> bool:
    """Whether some pixel of ``image`` is ``colour`` (give or take the resampling)."""
    r, g, b = ImageChops.difference(image.convert("RGB"),
                                    Image.new("RGB", image.size, colour)).split()
    worst_channel = ImageChops.lighter(ImageChops.lighter(r, g), b)  # per pixel
    return int(worst_channel.getextrema()[0]) <= 6  # type: ignore[arg-type]


def test_reference_thumbnails_and_cast_names_are_drawn() -> None:
    plain = canvas(look())
    cast = canvas(look(cast=("Maya", "Leo"),
                       references=(("Maya", png(RED)), ("Leo", png(YELLOW)))))
    width, height = 640, 360
    x0 = round(width * 0.05) + drift(look())
    below = round(height * 0.08) + round(height * 0.62)  # under the card
    box = (x0, below, x0 + width // 2, height - 60)
    assert present(cast.crop(box), RED) and present(cast.crop(box), YELLOW)  # Maya's, Leo's
    assert not present(plain.crop(box), RED)
    # The names: the card's cast line differs from a card without a cast.
    card = (x0, round(height * 0.08), x0 + round(width * 0.75), below)
    assert ImageChops.difference(plain.crop(card), cast.crop(card)).getbbox() is not None
    # Names only (no pictures): the card still changes, and no thumbnail row is drawn.
    named = canvas(look(cast=("Maya",)))
    assert ImageChops.difference(plain.crop(card), named.crop(card)).getbbox() is not None


def frames_of(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        return [f.to_image() for f in container.decode(video=0)]  # type: ignore[no-untyped-call]


@pytest.mark.slow
def test_a_clip_starts_on_its_first_frame_and_ends_on_its_last(tmp_path: Path) -> None:
    dest = tmp_path / "clip.mp4"
    # Shapes unlike the frame's: they are fitted to cover it.
    draw(look(first_frame=png(RED, (200, 200)), last_frame=png(BLUE, (900, 300))), dest)
    frames = frames_of(dest)
    whole = (0, 0, 640, 360)
    assert len(frames) == 48
    assert near(colour_at(frames[0], whole), RED)
    assert near(colour_at(frames[-1], whole), BLUE)
    middle = colour_at(frames[24], whole)
    assert not near(middle, RED, 40) and not near(middle, BLUE, 40)  # the card in between
    # Nothing freezes: consecutive frames differ as the first frame gives way.
    assert ImageChops.difference(frames[0], frames[1]).getbbox() is not None
    without = tmp_path / "plain.mp4"
    draw(look(), without)
    assert not near(colour_at(frames_of(without)[0], whole), RED, 40)


@pytest.mark.slow
def test_a_cast_brief_renders_offline_with_its_references(tmp_path: Path) -> None:
    folder = tmp_path / "brief"
    folder.mkdir()
    pictures = {"maya.png": RED, "leo.png": YELLOW, "pier.png": GREEN}
    for name, colour in pictures.items():
        (folder / name).write_bytes(png(colour))
    (folder / "harbor.md").write_text(
        "Cast:\n- Maya: a woman in a yellow raincoat. Images: maya.png\n"
        "- Leo: a grey-bearded fisherman. Images: leo.png\n\n"
        "Shot 1: Maya walks along the pier.\nFirst frame: pier.png\n"
        "Shot 2: Leo hauls a net.\nShot 3: Maya and Leo share a thermos.\nShot 4: Gulls circle.\n",
        encoding="utf-8")
    settings = Settings(home=tmp_path / "home")
    result = render(folder / "harbor.md", settings=settings, model="local/sim", size="640x360",
                    output=tmp_path / "out.mp4")
    sha = {name: "sha256:" + hashlib.sha256(png(c)).hexdigest() for name, c in pictures.items()}
    lines = read_journal(settings.journal_path, accepted_only=True)
    sent = {word: next(line for line in lines if line["prompt"].startswith(word))
            for word in ("Maya walks", "Leo hauls", "Maya and Leo", "Gulls")}
    assert [(r["name"], r["sha256"]) for r in sent["Maya walks"]["references"]] == \
        [("Maya", sha["maya.png"])]
    assert sent["Maya walks"]["first_frame"] == sha["pier.png"]
    assert [(r["name"], r["sha256"]) for r in sent["Leo hauls"]["references"]] == \
        [("Leo", sha["leo.png"])]
    assert [(r["name"], r["sha256"]) for r in sent["Maya and Leo"]["references"]] == \
        [("Maya", sha["maya.png"]), ("Leo", sha["leo.png"])]
    assert sent["Maya and Leo"]["cast"] == ["Maya", "Leo"]
    assert sent["Gulls"]["references"] == [] and sent["Gulls"]["cast"] == []
    # The output opens on the pier: shot 1's first frame.
    assert near(colour_at(frames_of(result.output)[0], (0, 0, 640, 360)), GREEN)
