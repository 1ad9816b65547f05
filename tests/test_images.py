"""Reading the images a brief names: files and URLs, checked, hashed, once, up front.

Shot keys follow the images' bytes, never their paths; a bad image is refused with a clear
message before anything is written; the service reads only URLs, through the SSRF guard,
and stores the bytes with the render, where a later run reads them.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from shotline import api
from shotline.core.capabilities import load_table
from shotline.core.keys import planned_key
from shotline.errors import ImageError, UnsafeURLError
from shotline.images import inspect
from shotline.providers.local import read_journal
from shotline.service import actions
from shotline.settings import Settings
from shotline.store.db import Database, images, renders

from .images import png
from .providers.vendor_server import Response, VendorServer

BRIEF = """Cast:
- Maya: a woman in a yellow raincoat. Images: {maya}
- Leo: a grey-bearded fisherman. Images: {leo}

Shot 1: Maya walks along the pier.
First frame: {pier}
Shot 2: Leo hauls a net.
Shot 3: Maya and Leo share a thermos.
Shot 4: Gulls circle.
"""
COLOURS = {"maya": (200, 40, 40), "leo": (40, 40, 200), "pier": (40, 160, 60)}


def write(folder: Path, names: dict[str, str] | None = None,
          colours: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """The brief and its pictures in ``folder``; ``names`` renames the files."""
    names = names or {k: f"{k}.png" for k in COLOURS}
    folder.mkdir(parents=True, exist_ok=True)
    for key, colour in {**COLOURS, **(colours or {})}.items():
        (folder / names[key]).write_bytes(png(colour))
    path = folder / "brief.md"
    path.write_text(BRIEF.format(**names), encoding="utf-8")
    return path


def keys(path: Path, model: str, **kw: Any) -> list[str]:
    plan = api.plan(path, model=model, yes=True, **kw)
    caps = load_table().get(model)
    return [planned_key(plan, s, caps) for s in plan.shots]


MODELS = [("local/sim", {}), ("fal/kling-video-o3-standard", {"seconds": 12}),
          ("byteplus/dreamina-seedance-2-0-260128", {"seconds": 16}),
          ("runway/seedance2", {"seconds": 16}), ("google/veo-3.1-generate-001", {"seconds": 32})]


@pytest.mark.parametrize(("model", "kw"), MODELS, ids=[m for m, _ in MODELS])
def test_keys_follow_the_bytes_not_the_path(tmp_path: Path, model: str,
                                            kw: dict[str, Any]) -> None:
    first = keys(write(tmp_path / "a"), model, **kw)
    moved = write(tmp_path / "b" / "deeper", {k: f"renamed-{k}.png" for k in COLOURS})
    assert keys(moved, model, **kw) == first
    repainted = keys(write(tmp_path / "c", colours={"leo": (41, 40, 200)}), model, **kw)
    # Leo is in shots 2 and 3 (shot 3 sends his picture beside Maya's); 1 and 4 stay put.
    changed = [a != b for a, b in zip(first, repainted, strict=True)]
    sends_leo = [any(r.name == "Leo" for r in s.references)
                 for s in api.plan(write(tmp_path / "d"), model=model, yes=True, **kw).shots]
    assert changed == sends_leo and sends_leo[1]


def test_a_first_frame_s_bytes_change_its_shot_alone(tmp_path: Path) -> None:
    first = keys(write(tmp_path / "a"), "local/sim")
    other = keys(write(tmp_path / "b", colours={"pier": (40, 161, 60)}), "local/sim")
    assert [a != b for a, b in zip(first, other, strict=True)] == [True, False, False, False]


def test_relative_paths_are_read_from_the_brief_s_folder(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "brief")
    monkeypatch.chdir(tmp_path)  # not the brief's folder
    plan = api.plan(path, model="local/sim")
    assert plan.shots[0].first_frame and plan.shots[0].first_frame.source == "pier.png"
    # Text is read from the working directory.
    monkeypatch.chdir(tmp_path / "brief")
    assert api.plan(path.read_text(), model="local/sim").shots[0].first_frame is not None


def test_jpeg_and_webp_are_read_with_their_types() -> None:
    settings = Settings()
    assert inspect("a.jpg", png(fmt="JPEG"), settings).mime == "image/jpeg"
    ref = inspect("a.webp", png(size=(40, 30), fmt="WEBP"), settings)
    assert (ref.mime, ref.width, ref.height) == ("image/webp", 40, 30)


def _noise() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((100, 100), 64).save(out, format="PNG")
    assert len(out.getvalue()) > 5000
    return out.getvalue()


def _animated() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:])
    return out.getvalue()


BAD: list[tuple[str, Any, dict[str, Any], str]] = [
    ("missing", None, {}, "does not exist (looked for"),
    ("text", b"not an image at all", {}, "is not a readable image"),
    ("truncated", png()[:200], {}, "is not a readable image"),
    ("gif", png(fmt="GIF"), {}, "is GIF; give PNG, JPEG or WebP"),
    ("tiny", png(size=(8, 8)), {}, "is 8x8 px; sides must be 16 to 8192"),
    ("big", _noise(), {"max_image_bytes": 5000}, "over the 5000 allowed (SHOTLINE_MAX_IMAGE_BYTES)"),
    ("animated", _animated(), {}, "is animated (2 frames)"),
    ("many", png(), {"max_images": 2}, "names 3 images, over the 2 allowed"),
]


@pytest.mark.parametrize(("case", "data", "config", "words"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_image_is_refused_up_front_and_nothing_is_written(
        tmp_path: Path, case: str, data: bytes | None, config: dict[str, Any],
        words: str) -> None:
    path = write(tmp_path / "brief")
    leo = tmp_path / "brief" / "leo.png"
    if data is None:
        leo.unlink()
    elif case != "many":
        leo.write_bytes(data)
    home = tmp_path / "home"
    with pytest.raises(ImageError) as caught:
        api.render(path, settings=Settings(home=home, **config), model="local/sim",
                   output=tmp_path / "out.mp4")
    assert words in str(caught.value)
    if case not in ("many",):
        assert "leo.png" in str(caught.value)  # named as the brief wrote it
    assert not home.exists() and not (tmp_path / "out.mp4").exists()


def test_other_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="only files and http"):
        api.plan("Shot 1: A walk.\nFirst frame: ftp://example.com/a.png\n", model="local/sim")


def test_the_cli_says_which_image_is_wrong_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path / "brief")
    (tmp_path / "brief" / "pier.png").unlink()
    proc = subprocess.run([sys.executable, "-m", "shotline", "plan", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "image pier.png does not exist" in proc.stderr


# --------------------------------------------------------------------------- URLs


@pytest.fixture
def pictures() -> Iterator[VendorServer]:
    """A real HTTP server on loopback serving a picture, a redirect to it and a huge file."""
    server = VendorServer().start()
    server.route("GET", r"/maya\.png")(lambda req, m: Response(
        200, body=png((200, 40, 40)), headers={"content-type": "image/png"}))
    server.route("GET", r"/moved\.png")(lambda req, m: Response(
        302, headers={"location": "/maya.png"}))
    server.route("GET", r"/huge\.png")(lambda req, m: Response(
        200, body=b"\x89PNG" + b"\0" * 200_000, headers={"content-type": "image/png"}))
    try:
        yield server
    finally:
        server.stop()


def url_brief(url: str) -> str:
    return f"Cast:\n- Maya: a woman. Images: {url}\n\nShot 1: Maya walks.\nShot 2: Gulls.\n"


def test_a_url_is_fetched_once_and_its_bytes_are_what_keys_cover(
        tmp_path: Path, pictures: VendorServer) -> None:
    text = url_brief(f"{pictures.url}/moved.png")  # a redirect, followed
    req = api.resolve(text, model="local/sim")
    result = api.render(req.brief, settings=Settings(home=tmp_path / "home"), model="local/sim",
                        output=tmp_path / "out.mp4")
    assert result.output.exists()
    assert len(pictures.calls("GET", r"/maya\.png$")) == 1  # resolved once, rendered from it
    file_plan = api.plan(write(tmp_path / "a"), model="local/sim")
    assert api.plan(text, model="local/sim").cast[0].images[0].sha256 == \
        file_plan.cast[0].images[0].sha256  # the same picture, by file or by URL


@pytest.mark.parametrize(("path", "words"), [
    ("/gone.png", "the server answered 404"),
    ("/huge.png", "over the 100000 bytes allowed"),
])
def test_a_url_that_fails_is_refused(tmp_path: Path, pictures: VendorServer, path: str,
                                     words: str) -> None:
    with pytest.raises(ImageError, match=words):
        api.plan(url_brief(pictures.url + path), model="local/sim",
                 settings=Settings(home=tmp_path, max_image_bytes=100_000))


# --------------------------------------------------------------------------- the service


def submit(settings: Settings, text: str) -> dict[str, Any]:
    db = Database.for_home(settings.home)
    try:
        view, _ = asyncio.run(actions.submit(db, settings, load_table(), None,
                                             actions.RenderRequest(brief=text, model="local/sim")))
        return view
    finally:
        db.close()


def rows(home: Path, table: sa.Table) -> int:
    db = Database.for_home(home)
    try:
        with db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    finally:
        db.close()


def test_the_service_refuses_paths_and_private_urls(tmp_path: Path,
                                                   pictures: VendorServer) -> None:
    home = tmp_path / "home"
    write(tmp_path / "brief")
    with pytest.raises(ImageError, match="only from http\\(s\\) URLs, never from its own disk"):
        submit(Settings(home=home), BRIEF.format(maya=tmp_path / "brief" / "maya.png",
                                                  leo="leo.png", pier="pier.png"))
    with pytest.raises(UnsafeURLError) as caught:
        submit(Settings(home=home), url_brief(f"{pictures.url}/maya.png"))
    assert "image URL http://127.0.0.1" in str(caught.value)
    assert "SHOTLINE_ALLOW_PRIVATE_IMAGES" in str(caught.value)
    assert pictures.calls("GET") == []  # refused before any request
    assert rows(home, renders) == 0 and rows(home, images) == 0


def test_the_service_stores_fetched_images_with_the_render_and_a_run_sends_them(
        tmp_path: Path, pictures: VendorServer) -> None:
    settings = Settings(home=tmp_path / "home", allow_private_images=True)
    view = submit(settings, url_brief(f"{pictures.url}/moved.png"))
    assert rows(settings.home, images) == 1 and len(pictures.calls("GET", "maya")) == 1
    shutil.rmtree(tmp_path / "home" / "local", ignore_errors=True)
    result = api.resume(view["id"], settings=settings)  # reads the picture from the store
    assert result.output.exists()
    lines = read_journal(settings.journal_path, accepted_only=True)
    sent = {line["prompt"].split(".")[0]: line["references"] for line in lines}
    assert [r["name"] for r in sent["Maya walks"]] == ["Maya"] and sent["Gulls"] == []
    assert len(pictures.calls("GET", "maya")) == 1  # never fetched again
