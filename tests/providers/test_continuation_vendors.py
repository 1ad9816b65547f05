"""A continuation pair against the vendors' fakes: the second call starts from the first
clip's last frame, sent the way each vendor takes a first frame, and only after the first
clip is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shotline.api import render
from shotline.engine.media import frame_png
from shotline.settings import Settings

from .fake_byteplus import FakeBytePlus
from .fake_fal import FalFake
from .vendor_server import Submit
from .wire_images import decode

PAIR = ("Shot 1: A gull dives over the harbour at dawn.\n"
        "Shot 2 (continues): The gull lands on the pier.\n")


def rendered(home: Path, model: str, seconds: float, size: str) -> tuple[Any, bytes]:
    """Render the pair; the result, and the first clip's last frame as the output shows it."""
    result = render(PAIR, settings=Settings(home=home, poll_interval=0.02, backoff_base=0.01),
                    model=model, seconds=seconds, size=size, output=home / "out.mp4")
    assert [s.continues for s in result.plan.shots] == [False, True]
    clip = result.shots[0].clip
    assert clip is not None
    frames = result.plan.shots[0].frames
    # The fakes' clips are 320x180: the frame is sent at the size the call asks for.
    width, height = (int(n) for n in size.split("x"))
    return result, frame_png(clip, (frames - 1) / result.plan.fps, (width, height))[0]


def pair(submits: list[Submit]) -> tuple[Submit, Submit]:
    accepted = [s for s in submits if s.job_id]
    assert len(accepted) == 2
    first, second = accepted
    assert "dives" in first.prompt and "lands" in second.prompt  # in order
    return first, second


@pytest.mark.slow
def test_kling_3_on_fal_starts_the_continuation_from_the_last_frame(
        tmp_path: Path, fal: FalFake) -> None:
    _, last = rendered(tmp_path / "home", "fal/kling-video-v3-pro", 10, "1080x1080")
    first, second = pair(fal.submits)
    assert first.endpoint == "fal-ai/kling-video/v3/pro/text-to-video"
    assert "start_image_url" not in first.body
    assert second.endpoint == "fal-ai/kling-video/v3/pro/image-to-video"
    assert decode(second.body["start_image_url"]) == last
    # The first clip was made (polled done) before the second was even submitted.
    assert second.at > first.at


@pytest.mark.slow
def test_seedance_on_byteplus_sends_the_last_frame_as_first_frame(
        tmp_path: Path, byteplus: FakeBytePlus) -> None:
    _, last = rendered(tmp_path / "home", "byteplus/dreamina-seedance-2-0-260128", 10,
                       "854x480")
    first, second = pair(byteplus.submits)
    assert [i["type"] for i in first.body["content"]] == ["text"]
    images = second.body["content"][1:]
    assert [i["role"] for i in images] == ["first_frame"]
    assert decode(images[0]["image_url"]["url"]) == last
