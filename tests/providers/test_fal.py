"""The fal adapter against a fake fal queue API, driven through the real render core."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shotline.api import estimate, render
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.errors import AmbiguousSubmitError, CapabilityError, ConfigError
from shotline.providers.base import JobRef, JobStatus, ShotRequest
from shotline.providers.fal import FalProvider
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from ..images import image_input
from . import contract
from .contract import accepted, outcomes
from .fake_fal import KEY, MODERATION, FalFake

BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A storm rolls in over the sea.\n"
FAST: dict[str, Any] = {"model": "fal/seedance-2.0", "seconds": 8, "size": "480x480"}


def settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, **kw)


def run(home: Path, *, config: dict[str, Any] | None = None, **kw: Any) -> Any:
    return render(BRIEF, settings=settings(home, **(config or {})), **{**FAST, **kw})


def rows(home: Path) -> list[dict[str, Any]]:
    return ledger.rows(Database.for_home(home))


def request(model: str, size: str, seconds: int, *, audio: bool = False, seed: int | None = None,
            **kw: Any) -> ShotRequest:
    from shotline.core.capabilities import load_table

    wire = load_table().get(model).wire_model
    return ShotRequest(model=model, wire_model=wire, prompt="A red kite rises.", seconds=seconds,
                       size=size, fps=24, audio=audio, seed=seed, take=1, key="k" * 16, **kw)


def direct(home: Path, call: Callable[[FalProvider], Any]) -> Any:
    async def go() -> Any:
        provider = FalProvider(settings(home))
        try:
            return await call(provider)
        finally:
            await provider.aclose()
    return asyncio.run(go())


# -- (a) end to end, and the exact bodies ---------------------------------------------------


@pytest.mark.slow
def test_two_shots_render_end_to_end(tmp_path: Path, fal: FalFake) -> None:
    args: dict[str, Any] = {"model": "fal/kling-video-v2.6-pro", "seconds": 10, "size": "1080x1080",
                            "audio": True}
    result = render(BRIEF, settings=settings(tmp_path), **args)
    media.verify(result.output, size=(1080, 1080), fps=24, frames=10 * 24, audio=True)
    costs = [s.full_usd for s in estimate(BRIEF, settings=settings(tmp_path), **args).shots]
    paid = rows(tmp_path)
    assert len(paid) == 2 and {r["provider_job_id"] for r in paid} == accepted(fal)
    assert sorted(r["amount"] for r in paid) == sorted(costs)
    assert len(fal.submits) == 2
    for s in fal.submits:
        assert s.endpoint == "fal-ai/kling-video/v2.6/pro/text-to-video"
        assert s.headers["authorization"] == f"Key {KEY}"
        assert set(s.body) == {"prompt", "duration", "aspect_ratio", "generate_audio"}
        assert s.body["duration"] == "5" and s.body["aspect_ratio"] == "1:1"
        assert s.body["generate_audio"] is True and isinstance(s.body["prompt"], str)
    # Polls use the returned URLs, whose paths drop the model's sub-path.
    polls = fal.server.calls("GET", r"/status$")
    assert polls and all(p.path.startswith("/fal-ai/kling-video/requests/") for p in polls)
    assert all(p.query == {"logs": ["0"]} for p in polls)


P = "A red kite rises."
BODIES = [
    ("fal/kling-video-v2.6-pro", "1920x1080", 10, False, 3,
     {"prompt": P, "duration": "10", "aspect_ratio": "16:9", "generate_audio": False}),
    ("fal/kling-video-v4", "720x1280", 7, True, None,
     {"prompt": P, "duration": "7", "aspect_ratio": "9:16"}),
    ("fal/seedance-2.0", "854x480", 6, True, 7,
     {"prompt": P, "duration": "6", "resolution": "480p", "aspect_ratio": "16:9",
      "generate_audio": True, "seed": 7}),
    ("fal/wan-2.5", "480x480", 5, False, 3,
     {"prompt": P, "duration": "5", "resolution": "480p", "aspect_ratio": "1:1"}),
    ("fal/wan-2.6", "1920x1080", 15, True, None,
     {"prompt": P, "duration": "15", "resolution": "1080p", "aspect_ratio": "16:9"}),
    ("fal/minimax-hailuo-2.3-standard", "1366x768", 10, False, None,
     {"prompt": P, "duration": "10", "prompt_optimizer": False}),
    ("fal/minimax-hailuo-2.3-pro", "1920x1080", 6, False, None,
     {"prompt": P, "prompt_optimizer": False}),
    ("fal/veo3-fast", "720x1280", 8, True, 5,
     {"prompt": P, "duration": "8s", "aspect_ratio": "9:16", "resolution": "720p",
      "generate_audio": True}),
    ("fal/luma-ray-3.2", "1680x720", 10, False, None,
     {"prompt": P, "duration": "10s", "aspect_ratio": "21:9", "resolution": "720p"}),
]


@pytest.mark.parametrize(("model", "size", "seconds", "audio", "seed", "body"), BODIES,
                         ids=[b[0] for b in BODIES])
def test_each_family_sends_its_documented_body(tmp_path: Path, fal: FalFake, model: str, size: str,
                                               seconds: int, audio: bool, seed: int | None,
                                               body: dict[str, Any]) -> None:
    req = request(model, size, seconds, audio=audio, seed=seed)
    ref = direct(tmp_path, lambda p: p.submit(req))
    (sent,) = fal.submits
    assert sent.endpoint == req.wire_model
    assert sent.body == body
    assert {k: type(v) for k, v in sent.body.items()} == {k: type(v) for k, v in body.items()}
    assert ref.provider == "fal" and ref.job_id == sent.job_id
    assert set(ref.data) == {"status_url", "response_url", "cancel_url"}


def test_poll_maps_the_queue_states_and_cancel_puts(tmp_path: Path, fal: FalFake) -> None:
    req = request("fal/seedance-2.0", "480x480", 4)

    async def go(p: FalProvider) -> tuple[list[JobStatus], bool, JobRef]:
        ref = await p.submit(req)
        cancelled = await p.cancel(ref)
        states = [await p.poll(ref) for _ in range(3)]
        return states, cancelled, ref

    states, cancelled, ref = direct(tmp_path, go)
    assert [s.state for s in states] == ["queued", "running", "succeeded"]
    assert states[0].next_poll and states[0].next_poll > 0 and states[0].error is None
    assert cancelled and fal.jobs[ref.job_id].cancelled
    assert fal.server.calls("PUT", r"/requests/.+/cancel$")


# -- (b)-(g) faults through the core ---------------------------------------------------------


@pytest.mark.slow
def test_429_with_retry_after_is_retried_after_that_delay(tmp_path: Path, fal: FalFake) -> None:
    contract.storm_429_retried(tmp_path, fal, lambda: run(tmp_path))


@pytest.mark.slow
def test_a_burst_of_503s_is_retried(tmp_path: Path, fal: FalFake) -> None:
    fal.on("storm", "503", times=3)
    result = run(tmp_path)
    assert result.seconds == pytest.approx(8, abs=1 / 24)
    assert [s.job_id is None for s in fal.posts_for("storm")] == [True, True, True, False]
    assert {r["provider_job_id"] for r in rows(tmp_path)} == accepted(fal)


@pytest.mark.slow
def test_moderation_fails_with_the_vendors_words_and_is_not_resubmitted(
        tmp_path: Path, fal: FalFake) -> None:
    fal.on("storm", "moderation")
    with pytest.raises(RenderFailed, match="shot 2: .*flagged by a content checker") as info:
        run(tmp_path)
    assert MODERATION in str(info.value) and KEY not in str(info.value)
    assert len(fal.posts_for("storm")) == 1
    (kite,) = fal.posts_for("kite")
    assert [r["provider_job_id"] for r in rows(tmp_path)] == [kite.job_id]


@pytest.mark.slow
def test_a_transient_job_failure_is_resubmitted_and_not_billed(tmp_path: Path, fal: FalFake) -> None:
    contract.storm_failure_resubmitted(tmp_path, fal, lambda: run(tmp_path))


@pytest.mark.slow
def test_a_submit_timeout_is_found_in_the_history_not_resubmitted(tmp_path: Path,
                                                                  fal: FalFake) -> None:
    contract.dips_submit_timeout_reconciled(
        tmp_path, fal, lambda: run(tmp_path, config={"provider_timeout": 0.5}), word="storm")
    storm_posts = [r for r in fal.server.calls("POST") if "storm" in r.json()["prompt"]]
    assert len(storm_posts) == 1
    [listed, *_] = fal.server.calls("GET", "/platform/models/requests/by-endpoint")
    assert listed.headers["authorization"] == f"Key {KEY}"  # the platform host gets the key


def test_an_unlisted_request_is_unknown_until_the_deadline_then_never_made(
        tmp_path: Path, fal: FalFake) -> None:
    mine = request("fal/seedance-2.0", "480x480", 8)

    async def go(p: FalProvider) -> tuple[Any, Any, Any]:
        made = await p.submit(dataclasses.replace(mine, prompt="Another prompt."))
        with pytest.raises(AmbiguousSubmitError, match="no request with this input is in the history yet"):
            await p.find(mine, time.time())
        old = await p.find(mine, time.time() - p.settings.render_deadline - 1)
        other = await p.find(dataclasses.replace(mine, prompt="Another prompt."), time.time())
        return made, old, other

    made, old, other = direct(tmp_path, go)
    assert old is None
    assert other is not None and other.job_id == made.job_id
    assert other.data == {k: made.data[k] for k in ("status_url", "response_url", "cancel_url")}


@pytest.mark.slow
def test_a_truncated_download_fails_the_shot_without_a_second_submit(
        tmp_path: Path, fal: FalFake) -> None:
    fal.on("storm", "truncate")
    with pytest.raises(RenderFailed, match="shot 2: .*unusable file") as info:
        run(tmp_path)
    assert KEY not in str(info.value)
    assert len(fal.posts_for("storm")) == 1
    assert outcomes(tmp_path, fal) == {"kite": "succeeded", "storm": "undelivered"}


@pytest.mark.slow
def test_an_expired_file_url_says_so(tmp_path: Path, fal: FalFake) -> None:
    fal.on("storm", "expire")
    with pytest.raises(RenderFailed, match="shot 2: .*410: it has expired") as info:
        run(tmp_path)
    assert KEY not in str(info.value)
    assert len(fal.posts_for("storm")) == 1
    assert outcomes(tmp_path, fal) == {"kite": "succeeded", "storm": "undelivered"}


# -- (h)-(j) refused before any call; secrets ------------------------------------------------


@pytest.mark.parametrize("kw", [{"size": "640x360"},
                                {"model": "fal/minimax-hailuo-2.3-standard", "size": "1366x768",
                                 "seconds": 12, "audio": True}])
def test_what_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, fal: FalFake, kw: dict[str, Any]) -> None:
    with pytest.raises(CapabilityError):
        run(tmp_path, **kw)
    assert fal.server.requests == []


@pytest.mark.parametrize("req", [
    request("fal/seedance-2.0", "640x360", 4),
    request("fal/minimax-hailuo-2.3-standard", "1366x768", 6, audio=True),
    request("fal/wan-2.5", "480x480", 7),
    request("fal/veo3-fast", "1280x720", 4, first_frame=image_input(b"first")),
], ids=["size", "audio", "duration", "image"])
def test_the_adapter_itself_refuses_before_any_call(tmp_path: Path, fal: FalFake,
                                                    req: ShotRequest) -> None:
    with pytest.raises(CapabilityError, match="cannot do"):
        direct(tmp_path, lambda p: p.submit(req))
    assert fal.server.requests == []


def test_a_missing_key_is_a_config_error_naming_the_variable(
        tmp_path: Path, fal: FalFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAL_KEY")
    with pytest.raises(ConfigError, match="FAL_KEY"):
        run(tmp_path)
    assert fal.server.requests == []


@pytest.mark.slow
def test_a_wrong_key_never_appears_in_the_error(tmp_path: Path, fal: FalFake,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "fal-wrong-key-987654"
    monkeypatch.setenv("FAL_KEY", wrong)
    with pytest.raises(RenderFailed, match="401: authentication failed") as info:
        run(tmp_path)
    assert wrong not in str(info.value) and "[redacted]" in str(info.value)
    assert all(s.job_id is None for s in fal.submits)  # the fake echoed it; we scrubbed it
    assert rows(tmp_path) == []
