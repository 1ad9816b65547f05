"""A 4-shot brief with a two-person cast, rendered against the vendors' fakes.

Each vendor's fake reads the images the way the vendor documents them and refuses malformed
ones (``wire_images``); each test then decodes what every accepted call carried and checks
it is exactly the cast the shot shows: Maya's two pictures in shot 1, Leo's in shot 2,
both members in shot 3 (round robin: Maya, Leo, Maya's second view), nothing in shot 4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shotline.api import render
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from ..images import png
from .fake_byteplus import FakeBytePlus
from .fake_fal import FalFake
from .fake_google import GoogleFake, install_google
from .fake_runway import FakeRunway
from .vendor_server import Submit, VendorServer
from .wire_images import decode

CAST = """Cast:
- Maya: a woman in her thirties with short red hair and a yellow raincoat. \
Images: maya.png, maya-side.png
- Leo: a grey-bearded fisherman in a blue knit cap. Images: leo.png

"""
SHOTS = ("Shot 1: Maya walks along the pier at dawn.\n{f1}"
         "Shot 2: Leo hauls a net onto the deck.\n{f2}"
         "Shot 3: Maya and Leo share a thermos of coffee.\n{f3}"
         "Shot 4: Gulls circle over the empty harbor.\n")
PICTURES = {"maya.png": (200, 40, 40), "maya-side.png": (230, 90, 60), "leo.png": (40, 40, 200),
            "pier.png": (40, 160, 60), "deck.png": (120, 120, 40), "table.png": (90, 60, 30)}
# What each shot must carry, by the word of its prompt: (member, picture) in order.
EXPECTED = {"pier": [("Maya", "maya.png"), ("Maya", "maya-side.png")],
            "net": [("Leo", "leo.png")],
            "thermos": [("Maya", "maya.png"), ("Leo", "leo.png"), ("Maya", "maya-side.png")],
            "Gulls": []}


@pytest.fixture
def brief(tmp_path: Path) -> Callable[..., Path]:
    """Write the brief and its pictures into a folder; ``frames`` adds a first frame to
    shots 1-3 (for models that take references only beside one)."""
    def write(frames: bool = False) -> Path:
        folder = tmp_path / "brief"
        folder.mkdir(exist_ok=True)
        for name, colour in PICTURES.items():
            (folder / name).write_bytes(png(colour))
        lines = {f"f{n}": f"First frame: {name}\n" if frames else ""
                 for n, name in ((1, "pier.png"), (2, "deck.png"), (3, "table.png"))}
        path = folder / "harbor.md"
        path.write_text(CAST + SHOTS.format(**lines), encoding="utf-8")
        return path
    return write


def settings(home: Path) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01)


def run(path: Path, home: Path, model: str, seconds: float, size: str) -> Any:
    result = render(path, settings=settings(home), model=model, seconds=seconds, size=size,
                    output=home / "out.mp4")
    assert result.output.exists()
    paid = ledger.rows(Database.for_home(home))
    assert len(paid) == 4
    return result


def by_shot(submits: list[Submit]) -> dict[str, Submit]:
    accepted = [s for s in submits if s.job_id]
    assert len(accepted) == len(submits) == 4, [s.status for s in submits]
    return {word: next(s for s in accepted if word in s.prompt) for word in EXPECTED}


def picture(data: bytes) -> str:
    return next(name for name, colour in PICTURES.items() if png(colour) == data)


# --------------------------------------------------------------------------- fal


def kling_elements(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(member, picture) for each picture of each element, citing names from the prompt."""
    out = []
    for n, element in enumerate(body.get("elements", []), 1):
        name = body["prompt"].split(f"@Element{n} is ", 1)[1].split(".", 1)[0]
        views = [element["frontal_image_url"], *element["reference_image_urls"]]
        for view in dict.fromkeys(views):  # a member with one picture gives it twice
            out.append((name, picture(decode(view))))
    return out


@pytest.mark.slow
def test_kling_o3_on_fal_sends_each_member_as_an_element(
        tmp_path: Path, fal: FalFake, brief: Callable[..., Path]) -> None:
    run(brief(), tmp_path / "home", "fal/kling-video-o3-standard", 12, "1280x720")
    sent = by_shot(fal.submits)
    for word, expected in EXPECTED.items():
        endpoint, body = sent[word].endpoint, sent[word].body
        route = "reference-to-video" if expected else "text-to-video"
        assert endpoint == f"fal-ai/kling-video/o3/standard/{route}"
        # Grouped by member: Maya's two views are one element, in the order shots name them.
        assert sorted(kling_elements(body)) == sorted(expected), word
    assert len(sent["thermos"].body["elements"]) == 2
    assert "Maya: a woman in her thirties" in sent["thermos"].body["prompt"]
    assert "Maya:" not in sent["Gulls"].body["prompt"]


@pytest.mark.slow
def test_kling_3_on_fal_sends_elements_beside_first_frames(
        tmp_path: Path, fal: FalFake, brief: Callable[..., Path]) -> None:
    run(brief(frames=True), tmp_path / "home", "fal/kling-video-v3-pro", 12, "1080x1080")
    sent = by_shot(fal.submits)
    frames = {"pier": "pier.png", "net": "deck.png", "thermos": "table.png"}
    for word, expected in EXPECTED.items():
        body = sent[word].body
        if word in frames:
            assert sent[word].endpoint == "fal-ai/kling-video/v3/pro/image-to-video"
            assert picture(decode(body["start_image_url"])) == frames[word]
            assert "aspect_ratio" not in body  # the first frame sets the shape
        else:
            assert sent[word].endpoint == "fal-ai/kling-video/v3/pro/text-to-video"
        assert sorted(kling_elements(body)) == sorted(expected), word


# --------------------------------------------------------------------------- BytePlus


@pytest.mark.slow
def test_seedance_on_byteplus_sends_reference_images(
        tmp_path: Path, byteplus: FakeBytePlus, brief: Callable[..., Path]) -> None:
    run(brief(), tmp_path / "home", "byteplus/dreamina-seedance-2-0-260128", 16, "854x480")
    sent = by_shot(byteplus.submits)
    for word, expected in EXPECTED.items():
        items = sent[word].body["content"][1:]
        assert all(i["role"] == "reference_image" for i in items)
        assert [picture(decode(i["image_url"]["url"])) for i in items] == [p for _, p in expected]


# --------------------------------------------------------------------------- Runway


@pytest.mark.slow
def test_seedance_on_runway_sends_references_on_the_text_route(
        tmp_path: Path, runway: FakeRunway, vendor_server: VendorServer,
        brief: Callable[..., Path]) -> None:
    run(brief(), tmp_path / "home", "runway/seedance2", 16, "1280x720")
    assert {r.path for r in vendor_server.calls("POST")} == {"/v1/text_to_video"}
    sent = by_shot(runway.submits)
    for word, expected in EXPECTED.items():
        refs = sent[word].body.get("references", [])
        assert [picture(decode(r["uri"])) for r in refs] == [p for _, p in expected]


# --------------------------------------------------------------------------- Google


@pytest.fixture
def google(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
           monkeypatch: pytest.MonkeyPatch) -> GoogleFake:
    monkeypatch.setenv("GOOGLE_ACCESS_TOKEN", "ya29.test-token-123456")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "shotline-test")
    monkeypatch.delenv("GOOGLE_CLOUD_LOCATION", raising=False)
    monkeypatch.delenv("SHOTLINE_GOOGLE_OUTPUT_URI", raising=False)
    monkeypatch.setenv("SHOTLINE_GOOGLE_BASE_URL", vendor_server.url)
    monkeypatch.setenv("SHOTLINE_GOOGLE_STORAGE_URL", vendor_server.url)
    return install_google(vendor_server, clip_bytes, token="ya29.test-token-123456")


@pytest.mark.slow
def test_veo_on_vertex_sends_asset_reference_images(
        tmp_path: Path, google: GoogleFake, brief: Callable[..., Path]) -> None:
    run(brief(), tmp_path / "home", "google/veo-3.1-generate-001", 32, "1280x720")
    sent = by_shot(google.submits)
    for word, expected in EXPECTED.items():
        instance = sent[word].body["instances"][0]
        refs = instance.get("referenceImages", [])
        assert all(r["referenceType"] == "ASSET" and r["image"]["mimeType"] == "image/png"
                   for r in refs)
        assert [picture(decode(r["image"]["bytesBase64Encoded"], bare=True)) for r in refs] == \
            [p for _, p in expected]
        assert sent[word].body["parameters"]["durationSeconds"] == 8
