"""The ``runway`` adapter against a fake Runway API on a real local HTTP server, via the core."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from shotline.api import estimate, render
from shotline.core.capabilities import load_table
from shotline.core.keys import shot_key
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.errors import CapabilityError, ConfigError, ShotlineError
from shotline.providers.base import JobRef, ShotRequest
from shotline.providers.runway import RunwayProvider
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from ..images import image_input
from . import contract
from .fake_runway import KEY, MODERATION_TEXT, FakeRunway
from .vendor_server import VendorServer

MODEL = "runway/gen4.5"
SIZE = "1280x720"
SECONDS = 4  # two 2 s shots: the shortest gen4.5 takes, to keep the stitch quick
BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A blue kite dips toward the sea.\n"
PROMPTS = ("A red kite rises over the dunes.", "A blue kite dips toward the sea.")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, **kw)


def run(home: Path, **kw: Any) -> Any:
    return render(BRIEF, model=MODEL, seconds=SECONDS, size=SIZE, seed=7,
                  settings=settings(home, **kw))


def rows(home: Path) -> list[dict[str, Any]]:
    return ledger.rows(Database.for_home(home))


def typed(body: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """A JSON body with each value's type, since 2 == 2.0 in Python but not on the wire."""
    return {k: (type(v).__name__, v) for k, v in body.items()}


def failure(home: Path, **kw: Any) -> RenderFailed:
    with pytest.raises(RenderFailed) as info:
        run(home, **kw)
    assert KEY not in str(info.value)
    return info.value


def direct(home: Path, go: Callable[[RunwayProvider], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        provider = RunwayProvider(settings(home))
        try:
            return await go(provider)
        finally:
            await provider.aclose()
    return asyncio.run(main())


def request(model: str = MODEL, size: str = SIZE, seconds: int = 5, *, audio: bool = False,
            seed: int | None = None, **kw: Any) -> ShotRequest:
    caps = load_table().get(model)
    key = shot_key(provider="runway", model=model, prompt="A kite.", seconds=seconds, size=size,
                   fps=24, audio=audio, seed=seed, take=1)
    return ShotRequest(model=model, wire_model=caps.wire_model, prompt="A kite.", seconds=seconds,
                       size=size, fps=24, audio=audio, seed=seed, take=1, key=key, **kw)


@pytest.fixture
def fake(runway: FakeRunway) -> FakeRunway:
    return runway  # the shared fixture (tests/providers/image_vendors.py)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_shots_render_and_bill_once_each(tmp_path: Path, fake: FakeRunway,
                                             vendor_server: VendorServer) -> None:
    result = run(tmp_path)
    media.verify(result.output, size=(1280, 720), fps=24, frames=SECONDS * 24, audio=False)

    est = estimate(BRIEF, model=MODEL, seconds=SECONDS, size=SIZE, settings=settings(tmp_path))
    paid = rows(tmp_path)
    assert sorted(r["provider_job_id"] for r in paid) == sorted(
        str(s.job_id) for s in fake.accepted())
    assert {r["shot_key"]: r["amount"] for r in paid} == {
        shot.key: cost.full_usd for shot, cost in zip(result.shots, est.shots, strict=True)}
    assert len(paid) == 2 and all(r["outcome"] == "succeeded" for r in paid)
    # THROTTLED is Runway's queue, not a refusal: the tasks went on to succeed.
    assert fake.served.count("THROTTLED") >= 2 and "RUNNING" in fake.served

    posts = vendor_server.calls("POST")
    assert {p.path for p in posts} == {"/v1/text_to_video"}
    bodies = sorted((p.json() for p in posts), key=lambda b: b["promptText"])
    assert [typed(b) for b in bodies] == [typed({
        "model": "gen4.5", "promptText": prompt, "ratio": "1280:720", "duration": 2, "seed": 7,
    }) for prompt in sorted(PROMPTS)]
    api = vendor_server.calls(pattern=r"^/v1/")
    assert api and all(r.headers["authorization"] == f"Bearer {KEY}" and
                       r.headers["x-runway-version"] == "2024-11-06" for r in api)
    files = vendor_server.calls("GET", r"^/cdn/")
    assert len(files) == 2 and all("authorization" not in r.headers for r in files)


# --------------------------------------------------------------------------- faults


@pytest.mark.slow
def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path, fake: FakeRunway) -> None:
    paid = contract.dips_429_honoured(tmp_path, fake, lambda: run(tmp_path))
    assert len(paid) == 2


@pytest.mark.slow
def test_a_burst_of_503s_is_retried(tmp_path: Path, fake: FakeRunway) -> None:
    contract.dips_503_burst_retried(tmp_path, fake, lambda: run(tmp_path), times=2)


def test_a_refused_submit_fails_with_the_vendors_words(tmp_path: Path, fake: FakeRunway) -> None:
    fake.on("dips", "refused")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "Prompt rejected by the content policy" in str(error)
    assert len(fake.posts_for("dips")) == 1
    # No task was made for the refused shot, so nothing is charged for it.
    assert [r["provider_job_id"] for r in rows(tmp_path)] == [fake.posts_for("rises")[0].job_id]


def test_a_moderated_task_is_never_resubmitted_and_is_billed(tmp_path: Path,
                                                             fake: FakeRunway) -> None:
    fake.on("dips", "moderation")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and MODERATION_TEXT in str(error)
    assert "SAFETY.INPUT.TEXT" in str(error) and "moderation" in str(error)
    assert len(fake.posts_for("dips")) == 1
    # Runway: "moderated generations have the same credit cost as successful generations".
    moderated = fake.posts_for("dips")[0].job_id
    assert sorted((r["provider_job_id"] == moderated, r["outcome"]) for r in rows(tmp_path)) == [
        (False, "succeeded"), (True, "failed")]


@pytest.mark.slow
def test_an_internal_failure_is_retried_as_a_new_task(tmp_path: Path, fake: FakeRunway) -> None:
    fake.on("dips", "internal", times=1)
    run(tmp_path)
    assert len(fake.posts_for("dips")) == 2
    assert sorted(r["outcome"] for r in rows(tmp_path)) == ["failed", "succeeded", "succeeded"]


def test_a_submit_that_times_out_is_not_resubmitted(tmp_path: Path, fake: FakeRunway) -> None:
    contract.dips_submit_timeout_not_resubmitted(fake, lambda **kw: failure(tmp_path, **kw))


def test_a_truncated_file_fails_the_shot_without_a_second_submit(tmp_path: Path,
                                                                 fake: FakeRunway) -> None:
    fake.on("dips", "truncate")
    error = failure(tmp_path)
    assert "shot 2: job" in str(error) and "unusable file" in str(error)
    assert len(fake.posts_for("dips")) == 1


def test_an_expired_file_url_says_so(tmp_path: Path, fake: FakeRunway) -> None:
    fake.on("dips", "gone")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "expired" in str(error) and "403" in str(error)
    assert len(fake.posts_for("dips")) == 1


# --------------------------------------------------------------------------- refusals, keys


@pytest.mark.parametrize("kw", [{"size": "1920x1080"}, {"model": "runway/gen4_turbo"}],
                         ids=["size", "gen4_turbo-text-only"])
def test_what_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, fake: FakeRunway, vendor_server: VendorServer, kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"model": MODEL, "size": SIZE} | kw
    # The planner refuses the size; gen4_turbo's missing frame is caught by the adapter,
    # which the core reports either as such or as the shots' failure (no call either way).
    with pytest.raises((CapabilityError, RenderFailed),
                       match="1920x1080|image-to-video only") as info:
        render(BRIEF, seconds=SECONDS, settings=settings(tmp_path), **args)
    assert vendor_server.requests == [] and rows(tmp_path) == []
    assert KEY not in str(info.value)


@pytest.mark.parametrize(("req", "words"), [
    (request("runway/gen4_turbo"), "image-to-video only"),
    (request(MODEL, "1104x832"), "text-to-video takes only"),
    (request(MODEL, audio=True), "audio"),
    (request(MODEL, seconds=11), "11 s"),
    (request("runway/veo3.1", "1280x720", 8, last_frame=image_input(b"l")), "needs a first frame"),
], ids=["gen4_turbo-text", "gen4.5-t2v-ratio", "audio", "duration", "veo-last-only"])
def test_the_adapter_itself_refuses_before_any_call(
        tmp_path: Path, fake: FakeRunway, vendor_server: VendorServer, req: ShotRequest,
        words: str) -> None:
    with pytest.raises(CapabilityError, match=words):
        direct(tmp_path, lambda p: p.submit(req))
    assert vendor_server.requests == []


def test_a_missing_key_is_a_config_error_naming_the_variable(
        tmp_path: Path, fake: FakeRunway, vendor_server: VendorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNWAYML_API_SECRET")
    with pytest.raises(ConfigError, match="RUNWAYML_API_SECRET"):
        run(tmp_path)
    assert vendor_server.requests == []


def test_a_wrong_key_fails_without_leaking_it(tmp_path: Path, fake: FakeRunway,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "rw-wrong-key-987654"
    monkeypatch.setenv("RUNWAYML_API_SECRET", wrong)
    with pytest.raises(ShotlineError) as info:
        run(tmp_path)
    assert "401" in str(info.value) and "RUNWAYML_API_SECRET" in str(info.value)
    assert wrong not in str(info.value) and KEY not in str(info.value)
    assert rows(tmp_path) == []


def test_the_version_header_is_required_like_the_vendor(
        tmp_path: Path, fake: FakeRunway, vendor_server: VendorServer) -> None:
    import httpx

    answer = httpx.post(f"{vendor_server.url}/v1/text_to_video", json={},
                        headers={"authorization": f"Bearer {KEY}"})
    assert answer.status_code == 400 and "X-Runway-Version" in answer.text


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(("req", "path", "body"), [
    (request("runway/veo3.1", "1920x1080", 8, audio=True, seed=3), "/v1/text_to_video",
     {"model": "veo3.1", "promptText": "A kite.", "ratio": "1920:1080", "duration": 8,
      "audio": True, "seed": 3}),
    (request("runway/veo3.1_fast", "720x1280", 4), "/v1/text_to_video",
     {"model": "veo3.1_fast", "promptText": "A kite.", "ratio": "720:1280", "duration": 4,
      "audio": False}),
    (request(MODEL, "720x1280", 10, seed=0), "/v1/text_to_video",
     {"model": "gen4.5", "promptText": "A kite.", "ratio": "720:1280", "duration": 10,
      "seed": 0}),
], ids=["veo3.1-audio-seed", "veo3.1_fast-silent", "gen4.5-seed"])
def test_each_model_gets_its_documented_body(tmp_path: Path, fake: FakeRunway,
                                             req: ShotRequest, path: str,
                                             body: dict[str, Any]) -> None:
    sent = direct(tmp_path, lambda p: asyncio.sleep(0, p.endpoint(req)))
    assert sent[0] == path and typed(sent[1]) == typed(body)


def test_image_to_video_sends_the_frame_as_a_data_uri(tmp_path: Path, fake: FakeRunway,
                                                      vendor_server: VendorServer) -> None:
    req = request("runway/gen4_turbo", "1104x832", 5, seed=9, first_frame=image_input(PNG))
    ref = direct(tmp_path, lambda p: p.submit(req))
    (post,) = vendor_server.calls("POST")
    assert post.path == "/v1/image_to_video" and ref.job_id == fake.accepted()[0].job_id
    body = post.json()
    assert body.pop("promptImage") == [{"uri": body_uri(PNG), "position": "first"}]
    assert typed(body) == typed({"model": "gen4_turbo", "promptText": "A kite.",
                                 "ratio": "1104:832", "duration": 5, "seed": 9})


def body_uri(data: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def test_cancel_deletes_the_task(tmp_path: Path, fake: FakeRunway) -> None:
    async def go(p: RunwayProvider) -> str:
        ref = await p.submit(request(MODEL))
        assert await p.cancel(ref) is True
        return (await p.poll(JobRef("runway", ref.job_id))).error or ""

    assert "cancelled" in direct(tmp_path, go)
    assert fake.deleted == [fake.accepted()[0].job_id]
