"""The openai adapter (the /v1/videos wire format, through a gateway) against a local fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from shotline.api import estimate, render
from shotline.core.capabilities import load_table
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.errors import CapabilityError, ConfigError, OverrideError, PermanentError
from shotline.providers.base import JobRef, ShotRequest
from shotline.providers.openai import OpenAIProvider, verify_webhook
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from . import contract
from .fake_openai import BLOCKED, OpenAIFake, install_openai
from .vendor_server import VendorServer

KEY = "sk-test-key-123456"
MODEL = "openai/gateway-video"
SIZE = "1280x720"  # the smallest size the gateway model allows
BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A blue kite dips toward the sea.\n"
ONE_SHOT = "A blue kite dips toward the sea, then rises.\n"  # retries: one 4 s shot is enough
OPTIONS: dict[str, Any] = {"seconds": 8, "size": SIZE}
# OpenAI's own Sora models are sunset in the table; a gateway's model is added the way a
# user would add it: an override with a reason and an expiry.
OVERRIDES = """\
[models."openai/gateway-video"]
reason = "test: a gateway still serving the /v1/videos format"
expires = 2099-01-01
wire_model = "sora-2-gateway"
durations = [4, 8, 12]
max_seconds = 12
sizes = ["1280x720", "720x1280"]
fps = [24]
audio = "always"
prices = { "720p" = 0.10 }
"""
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def gateway(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
            monkeypatch: pytest.MonkeyPatch) -> OpenAIFake:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_OPENAI_BASE_URL", vendor_server.url)
    return install_openai(vendor_server, clip_bytes, token=KEY)


def settings(home: Path, **kw: Any) -> Settings:
    overrides = home / "gateway.toml"
    overrides.write_text(OVERRIDES)
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, overrides=overrides, **kw)


def run(home: Path, model: str = MODEL, brief: str = BRIEF, **kw: Any) -> Any:
    options = OPTIONS if brief == BRIEF else {**OPTIONS, "seconds": 4}
    return render(brief, model=model, settings=settings(home, **kw), **options)


def failed(home: Path, match: str, **kw: Any) -> RenderFailed:
    with pytest.raises(RenderFailed, match=match) as info:
        run(home, **kw)
    assert KEY not in str(info.value)
    return info.value


@pytest.mark.slow
def test_two_shots_render_end_to_end(tmp_path: Path, gateway: OpenAIFake,
                                     vendor_server: VendorServer) -> None:
    result = run(tmp_path)
    media.verify(result.output, size=(1280, 720), fps=24, frames=8 * 24, audio=True)

    posts = vendor_server.calls("POST")
    assert [r.path for r in posts] == ["/v1/videos", "/v1/videos"]
    assert all(r.headers["content-type"] == "application/json" for r in posts)
    bodies = sorted((r.json() for r in posts), key=lambda b: b["prompt"])
    assert bodies == [  # seconds is a string on this wire; no seed, fps or audio field
        {"model": "sora-2-gateway", "prompt": "A blue kite dips toward the sea.",
         "seconds": "4", "size": "1280x720"},
        {"model": "sora-2-gateway", "prompt": "A red kite rises over the dunes.",
         "seconds": "4", "size": "1280x720"}]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in vendor_server.requests)
    contents = {r.path for r in vendor_server.calls("GET", r"/content$")}
    assert contents == {f"/v1/videos/{vid}/content" for vid in gateway.videos}

    rows = ledger.rows(Database.for_home(tmp_path))
    expected = estimate(BRIEF, model=MODEL, settings=settings(tmp_path), **OPTIONS)
    assert sorted(r["provider_job_id"] for r in rows) == sorted(gateway.videos)
    assert sorted(r["amount"] for r in rows) == sorted(s.full_usd for s in expected.shots)
    assert sum(r["amount"] for r in rows) == expected.full_usd == result.cost_usd


@pytest.mark.slow
def test_429_is_retried_after_retry_after(tmp_path: Path, gateway: OpenAIFake) -> None:
    contract.retried_after_retry_after(tmp_path, gateway, lambda: run(tmp_path, brief=ONE_SHOT))


@pytest.mark.slow
def test_a_burst_of_503s_is_retried(tmp_path: Path, gateway: OpenAIFake) -> None:
    contract.burst_of_503s_retried(tmp_path, gateway, lambda: run(tmp_path, brief=ONE_SHOT))


@pytest.mark.parametrize("fault", ["moderation", "moderation/poll"])
def test_moderation_fails_the_shot_with_the_vendors_words(tmp_path: Path, gateway: OpenAIFake,
                                                          fault: str) -> None:
    gateway.on("dips", fault, times=5)
    error = failed(tmp_path, r"shot 2: .*moderation")
    said = BLOCKED if fault == "moderation" else "flagged by our content policy"
    assert said in str(error)
    assert len(gateway.posts_for("dips")) == 1  # never resubmitted
    rows = ledger.rows(Database.for_home(tmp_path))
    assert [r["shot_key"] for r in rows] == [error.shots[0].key]


def test_a_submit_timeout_is_found_in_the_video_list_not_resubmitted(
        tmp_path: Path, gateway: OpenAIFake) -> None:
    contract.dips_submit_timeout_reconciled(tmp_path, gateway,
                                            lambda: run(tmp_path, provider_timeout=0.5))
    assert len(gateway.posts_for("dips")) == 1


def test_a_gateway_without_a_video_list_leaves_the_shot_unresubmitted(
        tmp_path: Path, gateway: OpenAIFake, vendor_server: VendorServer) -> None:
    vendor_server.routes = [r for r in vendor_server.routes
                            if not (r[0] == "GET" and r[1].pattern == "/v1/videos$")]
    gateway.on("dips", "slow", delay=1.5)
    error = failed(tmp_path, r"shot 2: .*lookup could not tell .*404", provider_timeout=0.5)
    assert "not resubmitted" in str(error) and "dashboard" in str(error)
    assert len(gateway.posts_for("dips")) == 1


LITELLM_KEY = "sk-litellm-key-987654"


def test_named_gateways_each_get_their_own_url_and_key_only(
        tmp_path: Path, gateway: OpenAIFake, clip_bytes: Callable[[int], bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = VendorServer().start()
    try:
        litellm = install_openai(proxy, clip_bytes, token=LITELLM_KEY)
        monkeypatch.setenv("LITELLM_API_KEY", LITELLM_KEY)
        overrides = tmp_path / "gateways.toml"
        overrides.write_text(OVERRIDES + f"""
[gateways.litellm]
base_url = "{proxy.url}/"
key_env = "LITELLM_API_KEY"

[models."openai/litellm-veo"]
reason = "test: a model served by a named gateway"
expires = 2099-01-01
gateway = "litellm"
wire_model = "vertex_ai/veo-3.1-generate-001"
durations = [4, 6, 8]
max_seconds = 8
sizes = ["1280x720"]
fps = [24]
audio = "always"
prices = {{ "720p" = 0.40 }}
""")
        config = Settings(home=tmp_path, poll_interval=0.02, backoff_base=0.01,
                          overrides=overrides)
        render(ONE_SHOT, model="openai/litellm-veo", seconds=4, size=SIZE, settings=config)
        render(ONE_SHOT, model=MODEL, seconds=4, size=SIZE, settings=config)
        [body] = [r.json() for r in proxy.calls("POST")]
        assert body["model"] == "vertex_ai/veo-3.1-generate-001"
        assert proxy.requests and all(r.headers["authorization"] == f"Bearer {LITELLM_KEY}"
                                      for r in proxy.requests)
        assert all(LITELLM_KEY not in str(r.headers) for r in gateway.server.requests)
        assert len(litellm.videos) == 1 and len(gateway.videos) == 1
        paid = ledger.rows(Database.for_home(tmp_path))
        assert sorted(r["provider_job_id"] for r in paid) == sorted([*litellm.videos,
                                                                     *gateway.videos])
        monkeypatch.delenv("LITELLM_API_KEY")
        with pytest.raises(ConfigError, match="gateway 'litellm'; set LITELLM_API_KEY"):
            render(ONE_SHOT, model="openai/litellm-veo", seconds=4, size=SIZE, take=2,
                   settings=config)
    finally:
        proxy.stop()


def test_a_model_naming_an_undeclared_gateway_is_refused(tmp_path: Path) -> None:
    overrides = tmp_path / "o.toml"
    overrides.write_text(OVERRIDES.replace('wire_model = "sora-2-gateway"',
                                           'wire_model = "x"\ngateway = "nowhere"'))
    with pytest.raises(OverrideError, match="gateway 'nowhere' is not declared"):
        load_table(overrides)


def test_a_truncated_file_fails_the_shot(tmp_path: Path, gateway: OpenAIFake) -> None:
    gateway.on("dips", "truncate")
    failed(tmp_path, r"shot 2: job video_[0-9a-f]+ returned an unusable file")
    assert len(gateway.posts_for("dips")) == 1


def test_expired_content_says_so(tmp_path: Path, gateway: OpenAIFake) -> None:
    gateway.on("dips", "expired")
    failed(tmp_path, r"shot 2: .*answered 404: it has expired")
    assert len(gateway.posts_for("dips")) == 1


def test_what_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, gateway: OpenAIFake, vendor_server: VendorServer) -> None:
    with pytest.raises(CapabilityError, match="cannot render 1920x1080"):
        render(BRIEF, model=MODEL, size="1920x1080", settings=settings(tmp_path))
    with pytest.raises(CapabilityError, match="sora-2 was shut down on 2026-09-24"):
        render(BRIEF, model="openai/sora-2", settings=settings(tmp_path))
    assert vendor_server.requests == []


def test_a_missing_key_is_a_config_error(tmp_path: Path, gateway: OpenAIFake,
                                         vendor_server: VendorServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        run(tmp_path)
    assert vendor_server.requests == []


def test_the_key_never_appears_in_errors(tmp_path: Path, gateway: OpenAIFake,
                                         vendor_server: VendorServer) -> None:
    gateway.token = "sk-a-different-key"  # the fake echoes the key it got in its 401
    error = failed(tmp_path, r"authentication failed")
    assert "OPENAI_API_KEY" in str(error) and "[redacted]" in str(error)
    assert all(KEY not in (s.error or "") for s in error.shots)
    assert len(vendor_server.calls("POST")) == 2  # auth errors are not retried


def test_progress_and_cancel(tmp_path: Path, gateway: OpenAIFake,
                             vendor_server: VendorServer) -> None:
    provider = OpenAIProvider(settings(tmp_path))
    request = ShotRequest(model=MODEL, wire_model="sora-2-gateway", prompt="p", seconds=4,
                          size=SIZE, fps=24, audio=True, seed=None, take=1, key="k")

    async def go() -> tuple[list[Any], bool, bool]:
        try:
            ref = await provider.submit(request)
            states = [await provider.poll(ref) for _ in range(3)]
            return states, await provider.cancel(ref), await provider.cancel(ref)
        finally:
            await provider.aclose()

    states, cancelled, again = asyncio.run(go())
    assert [(s.state, s.progress) for s in states] == [
        ("running", 0.33), ("running", 0.66), ("succeeded", 1.0)]  # progress is 0-100
    assert (cancelled, again) == (True, False)  # the second DELETE finds nothing
    assert len(vendor_server.calls("DELETE")) == 2
    assert JobRef.from_json(JobRef("openai", "video_1").to_json()).job_id == "video_1"


# -- webhooks -----------------------------------------------------------------------------


def signed(body: bytes, *, at: datetime | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    when = at or datetime.now(tz=UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(SECRET).sign(msg_id, when, body.decode())}


EVENT = json.dumps({"id": "evt_1", "object": "event", "type": "video.completed",
                    "created_at": 1764000000, "data": {"id": "video_abc"}}).encode()


def test_a_signed_webhook_gives_the_video_id() -> None:
    assert verify_webhook(EVENT, signed(EVENT), SECRET) == "video_abc"
    assert OpenAIProvider.verify_webhook(EVENT, signed(EVENT), SECRET) == "video_abc"


def test_a_tampered_webhook_is_rejected() -> None:
    headers = signed(EVENT)
    with pytest.raises(PermanentError, match="webhook rejected"):
        verify_webhook(EVENT.replace(b"video_abc", b"video_evil"), headers, SECRET)
    with pytest.raises(PermanentError, match="webhook rejected"):
        verify_webhook(EVENT, {**headers, "webhook-signature": "v1,bm90IGl0"}, SECRET)
    with pytest.raises(PermanentError, match="webhook rejected"):
        verify_webhook(EVENT, {**headers, "webhook-signature": "garbage"}, SECRET)


def test_an_old_webhook_is_rejected() -> None:
    stale = signed(EVENT, at=datetime.now(tz=UTC) - timedelta(minutes=10))
    with pytest.raises(PermanentError, match="too old"):
        verify_webhook(EVENT, stale, SECRET)
