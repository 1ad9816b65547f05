"""The ``byteplus`` adapter against a fake ModelArk API on a real local HTTP server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shotline.api import estimate, render
from shotline.core.capabilities import load_table
from shotline.core.keys import shot_key
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.errors import CapabilityError, ConfigError, ShotlineError
from shotline.providers.base import JobRef, JobStatus, ShotRequest
from shotline.providers.byteplus import BytePlusProvider
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from ..images import image_input
from . import contract
from .fake_byteplus import KEY, FakeBytePlus
from .vendor_server import VendorServer

MODEL = "byteplus/dreamina-seedance-2-0-260128"
FAST = "byteplus/dreamina-seedance-2-0-fast-260128"
SIZE = "640x480"
SECONDS = 8
BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A blue kite dips toward the sea.\n"
PROMPTS = ("A red kite rises over the dunes.", "A blue kite dips toward the sea.")


def settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, **kw)


def run(home: Path, **kw: Any) -> Any:
    return render(BRIEF, model=MODEL, seconds=SECONDS, size=SIZE, seed=7, audio=True,
                  settings=settings(home, **kw))


def rows(home: Path) -> list[dict[str, Any]]:
    return ledger.rows(Database.for_home(home))


def typed(value: Any) -> Any:
    """``value`` with every leaf's type, since 4 == 4.0 (and 1 == True) in Python but not on the wire."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def failure(home: Path, **kw: Any) -> RenderFailed:
    with pytest.raises(RenderFailed) as info:
        run(home, **kw)
    assert KEY not in str(info.value)
    return info.value


@pytest.fixture
def fake(byteplus: FakeBytePlus) -> FakeBytePlus:
    return byteplus  # the shared fixture (tests/providers/image_vendors.py)


def request(model: str = MODEL, *, seconds: int = 4, size: str = SIZE, audio: bool = False,
            seed: int | None = None, **kw: Any) -> ShotRequest:
    caps = load_table().get(model)
    key = shot_key(provider="byteplus", model=model, prompt="A kite.", seconds=seconds,
                   size=size, fps=24, audio=audio, seed=seed, take=1)
    return ShotRequest(model=model, wire_model=caps.wire_model, prompt="A kite.",
                       seconds=seconds, size=size, fps=24, audio=audio, seed=seed, take=1,
                       key=key, **kw)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_shots_render_and_bill_once_each(tmp_path: Path, fake: FakeBytePlus,
                                             vendor_server: VendorServer) -> None:
    result = run(tmp_path)
    media.verify(result.output, size=(640, 480), fps=24, frames=SECONDS * 24, audio=True)

    est = estimate(BRIEF, model=MODEL, seconds=SECONDS, size=SIZE, seed=7, audio=True,
                   settings=settings(tmp_path))
    paid = rows(tmp_path)
    assert sorted(r["provider_job_id"] for r in paid) == sorted(
        str(s.job_id) for s in fake.accepted())
    assert {r["shot_key"]: r["amount"] for r in paid} == {
        shot.key: cost.full_usd for shot, cost in zip(result.shots, est.shots, strict=True)}
    assert len(paid) == 2 and all(r["seconds_billed"] == 4 for r in paid)

    bodies = sorted((p.json() for p in vendor_server.calls("POST")),
                    key=lambda b: b["content"][0]["text"])
    assert [typed(b) for b in bodies] == [typed({
        "model": "dreamina-seedance-2-0-260128",
        "content": [{"type": "text", "text": prompt}],
        "duration": 4, "resolution": "480p", "ratio": "4:3", "seed": 7, "generate_audio": True,
    }) for prompt in sorted(PROMPTS)]
    api = vendor_server.calls(pattern=r"^/api/v3/")
    assert api and all(r.headers["authorization"] == f"Bearer {KEY}" for r in api)
    files = vendor_server.calls("GET", r"^/tos/")
    assert len(files) == 2 and all("authorization" not in r.headers for r in files)


# --------------------------------------------------------------------------- faults


@pytest.mark.slow
def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path, fake: FakeBytePlus) -> None:
    contract.dips_429_honoured(tmp_path, fake, lambda: run(tmp_path))


@pytest.mark.slow
def test_a_burst_of_503s_is_retried(tmp_path: Path, fake: FakeBytePlus) -> None:
    contract.dips_503_burst_retried(tmp_path, fake, lambda: run(tmp_path), times=3)


@pytest.mark.slow
def test_a_failed_task_is_a_new_attempt(tmp_path: Path, fake: FakeBytePlus) -> None:
    fake.on("dips", "fail", times=1)  # InternalServiceError: the same request may work
    run(tmp_path)
    assert [p.status for p in fake.posts_for("dips")] == [200, 200]
    assert len(rows(tmp_path)) == 2  # Seedance does not bill failed tasks


def test_moderation_refusal_fails_with_the_vendors_words(tmp_path: Path,
                                                         fake: FakeBytePlus) -> None:
    fake.on("dips", "moderation")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "InputTextSensitiveContentDetected" in str(error)
    assert "may contain sensitive information" in str(error)
    assert len(fake.posts_for("dips")) == 1
    assert [r["provider_job_id"] for r in rows(tmp_path)] == [fake.posts_for("rises")[0].job_id]


def test_output_moderation_is_a_permanent_failure(tmp_path: Path, fake: FakeBytePlus) -> None:
    fake.on("dips", "blocked")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "OutputVideoSensitiveContentDetected" in str(error)
    assert len(fake.posts_for("dips")) == 1 and len(rows(tmp_path)) == 1


def test_a_submit_that_times_out_is_not_resubmitted(tmp_path: Path, fake: FakeBytePlus) -> None:
    contract.dips_submit_timeout_not_resubmitted(fake, lambda **kw: failure(tmp_path, **kw))


def test_a_truncated_file_fails_the_shot_without_a_second_submit(
        tmp_path: Path, fake: FakeBytePlus) -> None:
    fake.on("dips", "truncate")
    error = failure(tmp_path)
    assert "shot 2: job cgt-" in str(error) and "unusable file" in str(error)
    assert len(fake.posts_for("dips")) == 1


def test_an_expired_file_url_says_so(tmp_path: Path, fake: FakeBytePlus) -> None:
    fake.on("dips", "gone")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "expired" in str(error) and "403" in str(error)
    assert len(fake.posts_for("dips")) == 1


def test_an_expired_task_fails_for_good(tmp_path: Path, fake: FakeBytePlus) -> None:
    fake.on("dips", "expire")
    error = failure(tmp_path)
    assert "shot 2:" in str(error) and "expired in ModelArk's queue" in str(error)
    assert len(fake.posts_for("dips")) == 1


# --------------------------------------------------------------------------- adapter alone


def test_usage_tokens_are_not_billed_seconds(tmp_path: Path, fake: FakeBytePlus) -> None:
    async def go() -> list[JobStatus]:
        provider = BytePlusProvider(settings(tmp_path))
        try:
            ref = await provider.submit(request())
            return [await provider.poll(ref) for _ in range(3)]
        finally:
            await provider.aclose()

    states = asyncio.run(go())
    assert [s.state for s in states] == ["queued", "running", "succeeded"]
    assert states[-1].billed_seconds is None  # the fake reports 108900 tokens


def test_cancel_deletes_only_a_queued_task(tmp_path: Path, fake: FakeBytePlus,
                                           vendor_server: VendorServer) -> None:
    async def go() -> tuple[bool, JobStatus, bool]:
        provider = BytePlusProvider(settings(tmp_path))
        try:
            queued = await provider.submit(request())
            cancelled = await provider.cancel(queued)  # its first look sees "queued"
            after = await provider.poll(queued)
            running = await provider.submit(request(seconds=5))
            await provider.poll(running)  # queued; the cancel's look will see "running"
            return cancelled, after, await provider.cancel(running)
        finally:
            await provider.aclose()

    cancelled, after, second = asyncio.run(go())
    assert cancelled and after.state == "failed" and not after.retryable
    assert "cancelled" in str(after.error)
    assert not second and len(vendor_server.calls("DELETE")) == 1


# --------------------------------------------------------------------------- refusals, keys


def test_a_size_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, fake: FakeBytePlus, vendor_server: VendorServer) -> None:
    with pytest.raises(CapabilityError, match="1920x1080"):
        render(BRIEF, model=FAST, seconds=SECONDS, size="1920x1080",
               settings=settings(tmp_path))
    assert vendor_server.requests == []


@pytest.mark.parametrize("shot", [request(seconds=3), request(seconds=16),
                                  request(FAST, size="1920x1080"), request(size="1000x480")])
def test_the_adapter_refuses_what_the_model_cannot_do(
        tmp_path: Path, fake: FakeBytePlus, vendor_server: VendorServer,
        shot: ShotRequest) -> None:
    async def go() -> None:
        provider = BytePlusProvider(settings(tmp_path))
        try:
            await provider.submit(shot)
        finally:
            await provider.aclose()

    with pytest.raises(CapabilityError, match="cannot do"):
        asyncio.run(go())
    assert vendor_server.requests == []


def test_a_missing_key_is_a_config_error_naming_the_variable(
        tmp_path: Path, fake: FakeBytePlus, vendor_server: VendorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARK_API_KEY")
    with pytest.raises(ConfigError, match="ARK_API_KEY"):
        run(tmp_path)
    assert vendor_server.requests == []


def test_a_wrong_key_fails_without_leaking_it(tmp_path: Path, fake: FakeBytePlus,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "ark-wrong-key-987654"
    monkeypatch.setenv("ARK_API_KEY", wrong)
    with pytest.raises(ShotlineError) as info:
        run(tmp_path)
    assert "401" in str(info.value) and "ARK_API_KEY" in str(info.value)
    assert wrong not in str(info.value) and KEY not in str(info.value)
    assert rows(tmp_path) == []


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(("size", "resolution", "ratio"), [
    ("1280x720", "720p", "16:9"), ("720x1280", "720p", "9:16"), ("720x720", "720p", "1:1"),
    ("960x720", "720p", "4:3"), ("720x960", "720p", "3:4"), ("1680x720", "720p", "21:9"),
    ("854x480", "480p", "16:9"), ("1120x480", "480p", "21:9"), ("1920x1080", "1080p", "16:9"),
    ("1440x1080", "1080p", "4:3"), ("2520x1080", "1080p", "21:9"),
])
def test_sizes_map_to_resolution_and_ratio(tmp_path: Path, fake: FakeBytePlus, size: str,
                                           resolution: str, ratio: str) -> None:
    provider = BytePlusProvider(settings(tmp_path))
    body = provider.body(request(size=size))
    asyncio.run(provider.aclose())
    # No seed given: none sent (the vendor picks); audio optional: the switch is always sent.
    assert typed(body) == typed({
        "model": "dreamina-seedance-2-0-260128", "content": [{"type": "text", "text": "A kite."}],
        "duration": 4, "resolution": resolution, "ratio": ratio, "generate_audio": False})


def test_frames_go_into_content_with_their_roles(tmp_path: Path, fake: FakeBytePlus) -> None:
    first, last = image_input(b"\x89PNG first"), image_input(b"\x89PNG last")
    provider = BytePlusProvider(settings(tmp_path))
    body = provider.body(request(first_frame=first, last_frame=last))
    asyncio.run(provider.aclose())
    assert [(c["type"], c.get("role")) for c in body["content"]] == [
        ("text", None), ("image_url", "first_frame"), ("image_url", "last_frame")]
    assert body["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_every_byteplus_size_in_the_table_maps(tmp_path: Path, fake: FakeBytePlus) -> None:
    provider = BytePlusProvider(settings(tmp_path))
    for caps in (c for c in load_table() if c.provider == "byteplus"):
        for size in caps.sizes:
            assert provider.body(request(caps.model, size=size))["ratio"]
    asyncio.run(provider.aclose())


def test_a_finished_job_ref_round_trips(tmp_path: Path, fake: FakeBytePlus) -> None:
    # A restarted worker polls from the persisted JobRef alone.
    async def go() -> JobStatus:
        provider = BytePlusProvider(settings(tmp_path))
        try:
            ref = await provider.submit(request())
            again = JobRef.from_json(ref.to_json())
            return [await provider.poll(again) for _ in range(3)][-1]
        finally:
            await provider.aclose()

    assert asyncio.run(go()).state == "succeeded"
