"""The ``xai`` adapter against a fake xAI API on a real local HTTP server, driven by the core."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shotline.api import estimate, render
from shotline.core.capabilities import load_table
from shotline.core.keys import shot_key
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.errors import CapabilityError, ConfigError, ShotlineError
from shotline.providers.base import ShotRequest
from shotline.providers.xai import XaiProvider
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from ..images import image_input
from . import contract
from .fake_xai import KEY, FakeXai, install_xai
from .vendor_server import VendorServer

MODEL = "xai/grok-imagine-video"
SIZE = "480x480"
SECONDS = 4
BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A blue kite dips toward the sea.\n"
PROMPTS = ("A red kite rises over the dunes.", "A blue kite dips toward the sea.")


def settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, **kw)


def run(home: Path, audio: bool = True, **kw: Any) -> Any:
    return render(BRIEF, model=MODEL, seconds=SECONDS, size=SIZE, audio=audio,
                  settings=settings(home, **kw))


def rows(home: Path) -> list[dict[str, Any]]:
    return ledger.rows(Database.for_home(home))


def typed(body: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """A JSON body with each value's type, since 2 == 2.0 in Python but not to a vendor."""
    return {k: (type(v).__name__, v) for k, v in body.items()}


def failure(home: Path, **kw: Any) -> RenderFailed:
    with pytest.raises(RenderFailed) as info:
        run(home, **kw)
    assert KEY not in str(info.value)
    return info.value


@pytest.fixture
def fake(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
         monkeypatch: pytest.MonkeyPatch) -> FakeXai:
    monkeypatch.setenv("XAI_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_XAI_BASE_URL", vendor_server.url)
    return install_xai(vendor_server, clip_bytes)


def request(model: str = MODEL, *, seconds: int = 2, size: str = SIZE, **kw: Any) -> ShotRequest:
    caps = load_table().get(model)
    key = shot_key(provider="xai", model=model, prompt="A kite.", seconds=seconds, size=size,
                   fps=24, audio=True, seed=None, take=1)
    return ShotRequest(model=model, wire_model=caps.wire_model, prompt="A kite.", seconds=seconds,
                       size=size, fps=24, audio=True, seed=kw.pop("seed", None), take=1, key=key,
                       **kw)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_shots_render_and_bill_once_each(tmp_path: Path, fake: FakeXai,
                                             vendor_server: VendorServer) -> None:
    result = run(tmp_path)
    media.verify(result.output, size=(480, 480), fps=24, frames=SECONDS * 24, audio=True)

    est = estimate(BRIEF, model=MODEL, seconds=SECONDS, size=SIZE, settings=settings(tmp_path))
    paid = rows(tmp_path)
    assert sorted(r["provider_job_id"] for r in paid) == sorted(
        str(s.job_id) for s in fake.accepted())
    assert {r["shot_key"]: r["amount"] for r in paid} == {
        shot.key: cost.full_usd for shot, cost in zip(result.shots, est.shots, strict=True)}
    assert all(r["outcome"] == "succeeded" for r in paid) and len(paid) == 2

    bodies = sorted((p.json() for p in vendor_server.calls("POST")), key=lambda b: b["prompt"])
    assert [typed(b) for b in bodies] == [typed({
        "model": "grok-imagine-video", "prompt": prompt, "duration": 2, "resolution": "480p",
        "aspect_ratio": "1:1", "generate_audio": True}) for prompt in sorted(PROMPTS)]
    api = vendor_server.calls(pattern=r"^/v1/")
    assert api and all(r.headers["authorization"] == f"Bearer {KEY}" for r in api)
    files = vendor_server.calls("GET", r"^/cdn/")
    assert len(files) == 2 and all("authorization" not in r.headers for r in files)


# --------------------------------------------------------------------------- faults


@pytest.mark.slow
def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path, fake: FakeXai) -> None:
    contract.dips_429_honoured(tmp_path, fake, lambda: run(tmp_path))


@pytest.mark.slow
def test_a_burst_of_503s_is_retried(tmp_path: Path, fake: FakeXai) -> None:
    contract.dips_503_burst_retried(tmp_path, fake, lambda: run(tmp_path), times=2)


def test_moderation_refusal_fails_with_the_vendors_words(tmp_path: Path, fake: FakeXai) -> None:
    fake.on("dips", "moderation")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "violates the content policy" in str(error)
    assert len(fake.posts_for("dips")) == 1
    assert [r["provider_job_id"] for r in rows(tmp_path)] == [fake.posts_for("rises")[0].job_id]


def test_a_submit_that_times_out_is_not_resubmitted(tmp_path: Path, fake: FakeXai) -> None:
    contract.dips_submit_timeout_not_resubmitted(fake, lambda **kw: failure(tmp_path, **kw))


def test_a_truncated_file_fails_the_shot_without_a_second_submit(tmp_path: Path,
                                                                 fake: FakeXai) -> None:
    fake.on("dips", "truncate")
    error = failure(tmp_path)
    assert "shot 2: job" in str(error) and "unusable file" in str(error)
    assert len(fake.posts_for("dips")) == 1


def test_an_expired_file_url_says_so(tmp_path: Path, fake: FakeXai) -> None:
    fake.on("dips", "gone")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "expired" in str(error) and "403" in str(error)
    assert len(fake.posts_for("dips")) == 1


def test_an_expired_request_fails_for_good_and_is_billed(tmp_path: Path, fake: FakeXai) -> None:
    fake.on("dips", "expire")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "expired at xAI" in str(error)
    assert len(fake.posts_for("dips")) == 1
    # The table says xAI bills failed jobs: the core records the attempt, once.
    assert sorted(r["outcome"] for r in rows(tmp_path)) == ["failed", "succeeded"]


def test_output_moderation_is_a_permanent_failure(tmp_path: Path, fake: FakeXai) -> None:
    fake.on("dips", "blocked")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "moderation" in str(error)
    assert len(fake.posts_for("dips")) == 1


# --------------------------------------------------------------------------- refusals, keys


def test_a_size_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, fake: FakeXai, vendor_server: VendorServer) -> None:
    with pytest.raises(CapabilityError, match="1920x1080"):
        render(BRIEF, model=MODEL, seconds=SECONDS, size="1920x1080",
               settings=settings(tmp_path))
    assert vendor_server.requests == []


@pytest.mark.parametrize("shot", [
    request(seconds=16), request(size="1280x544"),
    request(last_frame=image_input(b"last")),
])
def test_the_adapter_refuses_what_the_model_cannot_do(
        tmp_path: Path, fake: FakeXai, vendor_server: VendorServer, shot: ShotRequest) -> None:
    async def go() -> None:
        provider = XaiProvider(settings(tmp_path))
        try:
            await provider.submit(shot)
        finally:
            await provider.aclose()

    with pytest.raises(CapabilityError, match="cannot do|not supported"):
        asyncio.run(go())
    assert vendor_server.requests == []


def test_a_missing_key_is_a_config_error_naming_the_variable(
        tmp_path: Path, fake: FakeXai, vendor_server: VendorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XAI_API_KEY")
    with pytest.raises(ConfigError, match="XAI_API_KEY"):
        run(tmp_path)
    assert vendor_server.requests == []


def test_a_wrong_key_fails_without_leaking_it(tmp_path: Path, fake: FakeXai,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "xai-wrong-key-987654"
    monkeypatch.setenv("XAI_API_KEY", wrong)
    with pytest.raises(ShotlineError) as info:
        run(tmp_path)
    assert "401" in str(info.value) and "XAI_API_KEY" in str(info.value)
    assert wrong not in str(info.value) and "[redacted]" in str(info.value)
    assert rows(tmp_path) == []


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(("model", "size", "resolution", "ratio"), [
    (MODEL, "854x480", "480p", "16:9"), (MODEL, "480x854", "480p", "9:16"),
    (MODEL, "480x480", "480p", "1:1"), (MODEL, "1280x720", "720p", "16:9"),
    (MODEL, "720x1280", "720p", "9:16"), (MODEL, "720x720", "720p", "1:1"),
    ("xai/grok-imagine-video-1.5", "1920x1080", "1080p", "16:9"),
    ("xai/grok-imagine-video-1.5", "1080x1080", "1080p", "1:1"),
])
def test_every_table_size_maps_to_a_resolution_and_ratio(
        tmp_path: Path, fake: FakeXai, model: str, size: str, resolution: str,
        ratio: str) -> None:
    provider = XaiProvider(settings(tmp_path))
    body = provider.body(request(model, size=size, seconds=5, seed=7))
    asyncio.run(provider.aclose())
    wire = load_table().get(model).wire_model
    # No seed (the table says the vendor has none); the audio switch always goes.
    assert typed(body) == typed({"model": wire, "prompt": "A kite.", "duration": 5,
                                 "resolution": resolution, "aspect_ratio": ratio,
                                 "generate_audio": True})


def test_audio_off_is_sent_as_generate_audio_false(tmp_path: Path, fake: FakeXai) -> None:
    provider = XaiProvider(settings(tmp_path))
    silent = dataclasses.replace(request(), audio=False)
    assert provider.body(silent)["generate_audio"] is False
    asyncio.run(provider.aclose())


def test_every_xai_size_in_the_table_maps(tmp_path: Path, fake: FakeXai) -> None:
    provider = XaiProvider(settings(tmp_path))
    for caps in (c for c in load_table() if c.provider == "xai"):
        for size in caps.sizes:
            assert provider.body(request(caps.model, size=size))["resolution"].endswith("p")
    asyncio.run(provider.aclose())


def test_a_first_frame_goes_as_an_image_data_uri(tmp_path: Path, fake: FakeXai) -> None:
    first = image_input(b"\xff\xd8\xff first frame", mime="image/jpeg")
    provider = XaiProvider(settings(tmp_path))
    body = provider.body(request(first_frame=first))
    asyncio.run(provider.aclose())
    assert body["image"] == {"url": "data:image/jpeg;base64,/9j/IGZpcnN0IGZyYW1l"}
