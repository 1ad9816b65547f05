"""The ``luma`` adapter against a fake Luma (both APIs) on a real local HTTP server, via the core."""

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
from shotline.providers.luma import LumaProvider
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from ..images import image_input
from . import contract
from .fake_luma import AGENTS, FAILED_MODERATION, KEY, LEGACY, REFUSAL, FakeLuma, install_luma
from .vendor_server import VendorServer

MODEL = "luma/ray-2"  # the legacy API, whose wire format is documented by Luma's SDK
SIZE = "540x540"
SECONDS = 10  # two 5 s shots, the shortest Luma makes
BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A blue kite dips toward the sea.\n"
PROMPTS = ("A red kite rises over the dunes.", "A blue kite dips toward the sea.")


def settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, **kw)


def run(home: Path, model: str = MODEL, **kw: Any) -> Any:
    return render(BRIEF, model=model, seconds=SECONDS, size=SIZE, seed=7,
                  settings=settings(home, **kw))


def rows(home: Path) -> list[dict[str, Any]]:
    return ledger.rows(Database.for_home(home))


def typed(value: Any) -> Any:
    """A JSON value with each leaf's type, since 5 == 5.0 in Python but not on the wire."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    return (type(value).__name__, value)


def failure(home: Path, **kw: Any) -> RenderFailed:
    with pytest.raises(RenderFailed) as info:
        run(home, **kw)
    assert KEY not in str(info.value)
    return info.value


def direct(home: Path, go: Callable[[LumaProvider], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        provider = LumaProvider(settings(home))
        try:
            return await go(provider)
        finally:
            await provider.aclose()
    return asyncio.run(main())


def request(model: str = MODEL, size: str = SIZE, seconds: int = 5, **kw: Any) -> ShotRequest:
    caps = load_table().get(model)
    audio = kw.pop("audio", False)
    key = shot_key(provider="luma", model=model, prompt="A kite.", seconds=seconds, size=size,
                   fps=24, audio=audio, seed=None, take=1)
    return ShotRequest(model=model, wire_model=caps.wire_model, prompt="A kite.", seconds=seconds,
                       size=size, fps=24, audio=audio, seed=None, take=1, key=key, **kw)


@pytest.fixture
def fake(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
         monkeypatch: pytest.MonkeyPatch) -> FakeLuma:
    monkeypatch.setenv("LUMAAI_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_LUMA_BASE_URL", vendor_server.url + AGENTS)
    monkeypatch.setenv("SHOTLINE_LUMA_LEGACY_BASE_URL", vendor_server.url + LEGACY)
    return install_luma(vendor_server, clip_bytes)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize(("model", "prefix", "body"), [
    ("luma/ray-2", LEGACY + "/generations/video",
     {"model": "ray-2", "aspect_ratio": "1:1", "resolution": "540p", "duration": "5s"}),
    ("luma/ray-3.2", AGENTS + "/generations",
     {"model": "ray-3.2", "aspect_ratio": "1:1", "type": "video",
      "video": {"resolution": "540p", "duration": "5s"}}),
], ids=["ray-2-legacy", "ray-3.2-agents"])
def test_two_shots_render_and_bill_once_each(tmp_path: Path, fake: FakeLuma,
                                             vendor_server: VendorServer, model: str,
                                             prefix: str, body: dict[str, Any]) -> None:
    result = run(tmp_path, model)
    media.verify(result.output, size=(540, 540), fps=24, frames=SECONDS * 24, audio=False)

    est = estimate(BRIEF, model=model, seconds=SECONDS, size=SIZE, settings=settings(tmp_path))
    paid = rows(tmp_path)
    assert sorted(r["provider_job_id"] for r in paid) == sorted(
        str(s.job_id) for s in fake.accepted())
    assert {r["shot_key"]: r["amount"] for r in paid} == {
        shot.key: cost.full_usd for shot, cost in zip(result.shots, est.shots, strict=True)}
    assert len(paid) == 2 and all(r["outcome"] == "succeeded" for r in paid)
    running = "processing" if prefix.startswith(AGENTS) else "dreaming"
    assert {"queued", running, "completed"} <= set(fake.served)

    posts = vendor_server.calls("POST")
    assert {p.path for p in posts} == {prefix}
    prefix = prefix.rsplit("/generations", 1)[0]
    bodies = sorted((p.json() for p in posts), key=lambda b: b["prompt"])
    # No seed (Luma has none), no audio switch, durations as strings.
    assert [typed(b) for b in bodies] == [typed({"prompt": p, **body}) for p in sorted(PROMPTS)]
    api = vendor_server.calls(pattern=rf"^{prefix}/")
    assert api and all(r.headers["authorization"] == f"Bearer {KEY}" for r in api)
    assert not vendor_server.calls(pattern=rf"^{LEGACY if prefix == AGENTS else AGENTS}/")
    files = vendor_server.calls("GET", r"^/cdn/")
    assert len(files) == 2 and all("authorization" not in r.headers for r in files)


# --------------------------------------------------------------------------- faults


@pytest.mark.slow
def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path, fake: FakeLuma) -> None:
    paid = contract.dips_429_honoured(tmp_path, fake, lambda: run(tmp_path), ok=201)
    assert len(paid) == 2


@pytest.mark.slow
def test_a_burst_of_503s_is_retried(tmp_path: Path, fake: FakeLuma) -> None:
    contract.dips_503_burst_retried(tmp_path, fake, lambda: run(tmp_path), times=2, ok=201)


@pytest.mark.parametrize(("fault", "words"), [("refused", REFUSAL),
                                              ("moderation", FAILED_MODERATION)])
def test_moderation_fails_with_the_vendors_words(tmp_path: Path, fake: FakeLuma, fault: str,
                                                 words: str) -> None:
    fake.on("dips", fault)
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and words in str(error) and "moderation" in str(error)
    assert len(fake.posts_for("dips")) == 1
    assert [r["provider_job_id"] for r in rows(tmp_path)] == [fake.posts_for("rises")[0].job_id]


@pytest.mark.slow
def test_a_transient_failure_is_retried_as_a_new_generation(tmp_path: Path,
                                                            fake: FakeLuma) -> None:
    fake.on("dips", "fail", times=1)
    run(tmp_path)
    assert len(fake.posts_for("dips")) == 2
    assert [r["outcome"] for r in rows(tmp_path)] == ["succeeded", "succeeded"]  # not billed


def test_a_ray_2_submit_that_times_out_is_found_in_the_list_not_resubmitted(
        tmp_path: Path, fake: FakeLuma) -> None:
    contract.dips_submit_timeout_reconciled(tmp_path, fake,
                                            lambda: run(tmp_path, provider_timeout=0.5))


def test_a_ray_32_submit_that_times_out_is_not_resubmitted(tmp_path: Path,
                                                           fake: FakeLuma) -> None:
    contract.dips_submit_timeout_not_resubmitted(
        fake, lambda **kw: failure(tmp_path, model="luma/ray-3.2", **kw))


def test_a_truncated_file_fails_the_shot_without_a_second_submit(tmp_path: Path,
                                                                 fake: FakeLuma) -> None:
    fake.on("dips", "truncate")
    error = failure(tmp_path)
    assert "shot 2: job" in str(error) and "unusable file" in str(error)
    assert len(fake.posts_for("dips")) == 1


def test_an_expired_file_url_says_so(tmp_path: Path, fake: FakeLuma) -> None:
    fake.on("dips", "gone")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "expired" in str(error) and "410" in str(error)
    assert len(fake.posts_for("dips")) == 1


# --------------------------------------------------------------------------- refusals, keys


@pytest.mark.parametrize("kw", [{"size": "1280x544"}, {"model": "luma/ray-3.2", "audio": True}],
                         ids=["size", "audio"])
def test_what_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, fake: FakeLuma, vendor_server: VendorServer, kw: dict[str, Any]) -> None:
    args: dict[str, Any] = {"model": MODEL, "size": SIZE, "seconds": SECONDS} | kw
    with pytest.raises(CapabilityError):
        render(BRIEF, settings=settings(tmp_path), **args)
    assert vendor_server.requests == []


@pytest.mark.parametrize(("req", "words"), [
    (request("luma/ray-3.2", seconds=9), "9 s"),
    (request("luma/ray-2", seconds=10), "10 s"),
    (request(MODEL, "1280x544"), "size 1280x544"),
    (request(MODEL, audio=True), "audio"),
    (request(MODEL, first_frame=image_input(b"f")), "first frame"),
    (request("luma/ray-3.2", seconds=10, first_frame=image_input(b"f")), "need a 5 s clip"),
], ids=["ray-3.2-9s", "ray-2-10s", "size", "audio", "frame", "ray-3.2-10s-frame"])
def test_the_adapter_itself_refuses_before_any_call(
        tmp_path: Path, fake: FakeLuma, vendor_server: VendorServer, req: ShotRequest,
        words: str) -> None:
    with pytest.raises(CapabilityError, match=words):
        direct(tmp_path, lambda p: p.submit(req))
    assert vendor_server.requests == []


def test_a_missing_key_is_a_config_error_naming_the_variable(
        tmp_path: Path, fake: FakeLuma, vendor_server: VendorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUMAAI_API_KEY")
    with pytest.raises(ConfigError, match="LUMAAI_API_KEY"):
        run(tmp_path)
    assert vendor_server.requests == []


def test_a_wrong_key_fails_without_leaking_it(tmp_path: Path, fake: FakeLuma,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "luma-wrong-key-987654"
    monkeypatch.setenv("LUMAAI_API_KEY", wrong)
    with pytest.raises(ShotlineError) as info:
        run(tmp_path)
    assert "401" in str(info.value) and "LUMAAI_API_KEY" in str(info.value)
    assert wrong not in str(info.value) and KEY not in str(info.value)
    assert rows(tmp_path) == []


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(("model", "size", "seconds", "ratio", "tier"), [
    ("luma/ray-2", "1680x720", 9, "21:9", "720p"),
    ("luma/ray-flash-2", "720x1680", 5, "9:21", "720p"),
    ("luma/ray-flash-2", "1440x1080", 9, "4:3", "1080p"),
    ("luma/ray-3.2", "2520x1080", 10, "21:9", "1080p"),
    ("luma/ray-3.2", "960x540", 5, "16:9", "540p"),
])
def test_sizes_map_to_a_named_ratio_and_tier(tmp_path: Path, fake: FakeLuma, model: str,
                                             size: str, seconds: int, ratio: str,
                                             tier: str) -> None:
    api, body = direct(tmp_path, lambda p: asyncio.sleep(0, p.route(request(model, size, seconds))))
    wire = load_table().get(model).wire_model
    video = {"resolution": tier, "duration": f"{seconds}s"}
    expected: dict[str, Any] = {"model": wire, "prompt": "A kite.", "aspect_ratio": ratio}
    expected |= {"type": "video", "video": video} if api == "agents" else video
    assert api == ("agents" if model == "luma/ray-3.2" else "legacy")
    assert typed(body) == typed(expected)


def test_every_luma_size_in_the_table_maps(tmp_path: Path, fake: FakeLuma) -> None:
    async def go(p: LumaProvider) -> set[str]:
        return {p.route(request(c.model, size, c.durations[0]))[1]["aspect_ratio"]
                for c in load_table() if c.provider == "luma" for size in c.sizes}

    assert direct(tmp_path, go) == {"1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"}


def test_a_restarted_worker_polls_the_api_that_made_the_job(tmp_path: Path,
                                                            fake: FakeLuma) -> None:
    async def go(p: LumaProvider) -> str:
        ref = await p.submit(request("luma/ray-2"))
        again = JobRef.from_json(ref.to_json())  # as read back from the database
        return (await p.poll(again)).state

    assert direct(tmp_path, go) == "queued"


def test_the_key_goes_to_both_api_hosts_and_nowhere_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMAAI_API_KEY", KEY)
    monkeypatch.delenv("SHOTLINE_LUMA_BASE_URL", raising=False)
    monkeypatch.delenv("SHOTLINE_LUMA_LEGACY_BASE_URL", raising=False)

    async def go(p: LumaProvider) -> list[bool]:
        return [p._own_host(u) for u in (
            "https://agents.lumalabs.ai/v1/generations/x",
            "https://api.lumalabs.ai/dream-machine/v1/generations/x",
            "https://storage.cdn-luma.com/dream_machine/x.mp4")]

    assert direct(tmp_path, go) == [True, True, False]
