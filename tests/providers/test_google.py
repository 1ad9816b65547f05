"""The google adapter (Veo 3.1 on Vertex AI) against a local fake of the wire format."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shotline.api import estimate, render
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.errors import CapabilityError, ConfigError
from shotline.providers.base import JobRef, ShotRequest
from shotline.providers.google import GoogleProvider
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from . import contract
from .fake_google import BUCKET, FILTER_REASON, GoogleFake, install_google
from .vendor_server import Response, VendorServer

TOKEN = "ya29.test-token-123456"
PROJECT = "shotline-test"
MODEL = "google/veo-3.1-fast-generate-001"
SIZE = "1280x720"  # the smallest size the table allows for Veo 3.1
BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A blue kite dips toward the sea.\n"
ONE_SHOT = "A blue kite dips toward the sea, then rises.\n"  # retries: one 4 s shot is enough
OPTIONS: dict[str, Any] = {"seconds": 8, "size": SIZE, "audio": True, "seed": 7}


@pytest.fixture
def google(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
           monkeypatch: pytest.MonkeyPatch) -> GoogleFake:
    monkeypatch.setenv("GOOGLE_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.delenv("GOOGLE_CLOUD_LOCATION", raising=False)
    monkeypatch.delenv("SHOTLINE_GOOGLE_OUTPUT_URI", raising=False)
    monkeypatch.setenv("SHOTLINE_GOOGLE_BASE_URL", vendor_server.url)
    monkeypatch.setenv("SHOTLINE_GOOGLE_STORAGE_URL", vendor_server.url)
    return install_google(vendor_server, clip_bytes, token=TOKEN)


def settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, **kw)


def run(home: Path, model: str = MODEL, brief: str = BRIEF, **kw: Any) -> Any:
    options = OPTIONS if brief == BRIEF else {**OPTIONS, "seconds": 4}
    return render(brief, model=model, settings=settings(home, **kw), **options)


def failed(home: Path, match: str, **kw: Any) -> RenderFailed:
    with pytest.raises(RenderFailed, match=match) as info:
        run(home, **kw)
    assert TOKEN not in str(info.value)
    return info.value


def predicts(server: VendorServer) -> list[Any]:
    return [r.json() for r in server.calls("POST", r":predictLongRunning$")]


@pytest.mark.slow
@pytest.mark.parametrize("answer", ["base64", "gcs"])
def test_two_shots_render_end_to_end(tmp_path: Path, google: GoogleFake,
                                     vendor_server: VendorServer, answer: str) -> None:
    google.answer = answer
    result = run(tmp_path)
    media.verify(result.output, size=(1280, 720), fps=24, frames=8 * 24, audio=True)

    # Exactly the fields and JSON types Vertex expects, to the model's own path.
    path = f"/v1/projects/{PROJECT}/locations/us-central1/publishers/google/models/" \
           "veo-3.1-fast-generate-001"
    assert {r.path for r in vendor_server.calls("POST")} == {
        f"{path}:predictLongRunning", f"{path}:fetchPredictOperation"}
    bodies = sorted(predicts(vendor_server), key=lambda b: b["instances"][0]["prompt"])
    assert [b["instances"] for b in bodies] == [
        [{"prompt": "A blue kite dips toward the sea."}],
        [{"prompt": "A red kite rises over the dunes."}]]
    for body in bodies:
        params = body["parameters"]
        assert params == {"durationSeconds": 4, "aspectRatio": "16:9", "resolution": "720p",
                          "sampleCount": 1, "generateAudio": True, "seed": 7}
        assert [type(params[k]) for k in ("durationSeconds", "sampleCount", "seed")] == [int] * 3
        assert params["generateAudio"] is True
    polls = [r.json() for r in vendor_server.calls("POST", r":fetchPredictOperation$")]
    assert {p["operationName"] for p in polls} == set(google.jobs)
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in vendor_server.requests)
    if answer == "gcs":
        media_gets = vendor_server.calls("GET", rf"^/storage/v1/b/{BUCKET}/o/")
        assert len(media_gets) == 2 and all(r.query == {"alt": ["media"]} for r in media_gets)
        assert all("%2F" in r.path for r in media_gets)  # the object name is one segment

    # One ledger row per billed job, with the vendor's operation names and the estimate.
    rows = ledger.rows(Database.for_home(tmp_path))
    expected = estimate(BRIEF, model=MODEL, settings=settings(tmp_path), **OPTIONS)
    assert sorted(r["provider_job_id"] for r in rows) == sorted(
        name.rsplit("/", 1)[1] for name in google.jobs)
    assert sorted(r["amount"] for r in rows) == sorted(s.full_usd for s in expected.shots)
    assert sum(r["amount"] for r in rows) == expected.full_usd == result.cost_usd


def test_body_follows_the_table_for_audio_and_seed(tmp_path: Path, google: GoogleFake) -> None:
    overrides = tmp_path / "overrides.toml"
    overrides.write_text(
        '[models."google/veo-3.1-fast-generate-001"]\n'
        'reason = "test: a Veo without seed or audio switch"\nexpires = 2099-01-01\n'
        'seed = false\naudio = "always"\n')
    provider = GoogleProvider(settings(tmp_path, overrides=overrides))
    request = ShotRequest(model=MODEL, wire_model="veo-3.1-fast-generate-001", prompt="p",
                          seconds=8, size="1080x1920", fps=24, audio=False, seed=3, take=1,
                          key="k")
    assert provider.body(request) == {"instances": [{"prompt": "p"}], "parameters": {
        "durationSeconds": 8, "aspectRatio": "9:16", "resolution": "1080p", "sampleCount": 1}}
    asyncio.run(provider.aclose())


@pytest.mark.slow
def test_429_is_retried_after_retry_after(tmp_path: Path, google: GoogleFake) -> None:
    contract.retried_after_retry_after(tmp_path, google, lambda: run(tmp_path, brief=ONE_SHOT))


@pytest.mark.slow
def test_a_burst_of_503s_is_retried(tmp_path: Path, google: GoogleFake) -> None:
    contract.burst_of_503s_retried(tmp_path, google, lambda: run(tmp_path, brief=ONE_SHOT))


def test_moderation_fails_the_shot_with_googles_words(tmp_path: Path,
                                                      google: GoogleFake) -> None:
    google.on("dips", "moderation", times=5)
    error = failed(tmp_path, r"shot 2: .*moderation")
    assert FILTER_REASON in str(error)
    assert len(google.posts_for("dips")) == 1  # never resubmitted
    rows = ledger.rows(Database.for_home(tmp_path))
    assert [r["shot_key"] for r in rows] == [error.shots[0].key]  # filtered output is free


def test_a_submit_timeout_is_not_resubmitted(tmp_path: Path, google: GoogleFake) -> None:
    google.on("dips", "slow", delay=1.5)
    failed(tmp_path, r"shot 2: .*not resubmitted", provider_timeout=0.5)
    assert len(google.posts_for("dips")) == 1


@pytest.mark.parametrize("answer", ["base64", "gcs"])
def test_a_truncated_file_fails_the_shot(tmp_path: Path, google: GoogleFake,
                                         answer: str) -> None:
    google.answer = answer
    google.on("dips", "truncate")
    failed(tmp_path, r"shot 2: job [0-9a-f-]{36} returned an unusable file")
    assert len(google.posts_for("dips")) == 1


def test_an_expired_gcs_object_says_so(tmp_path: Path, google: GoogleFake) -> None:
    google.answer = "gcs"
    google.on("dips", "expired")
    failed(tmp_path, r"shot 2: .*answered 404: it has expired")
    assert len(google.posts_for("dips")) == 1


def test_what_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, google: GoogleFake, vendor_server: VendorServer) -> None:
    with pytest.raises(CapabilityError, match="cannot render 640x360"):
        render(BRIEF, model=MODEL, size="640x360", settings=settings(tmp_path))
    with pytest.raises(CapabilityError, match="shut down on 2026-10-22"):
        render(BRIEF, model="google/veo-3.1-generate-preview", settings=settings(tmp_path))
    assert vendor_server.requests == []


def test_gemini_omni_is_refused_before_any_call(tmp_path: Path, google: GoogleFake,
                                                vendor_server: VendorServer) -> None:
    # Not in the packaged table (runway/gemini_omni_flash serves it); a user who adds it
    # by hand is told why before anything is sent.
    overrides = tmp_path / "omni.toml"
    overrides.write_text("""
[models."google/gemini-omni-1.2-flash"]
reason = "test"
expires = 2099-01-01
duration_range = [3, 15]
max_seconds = 15
sizes = ["1280x720"]
fps = [24]
audio = "always"
prices = { "720p" = 0.13 }
""")
    with pytest.raises(CapabilityError, match="not supported by this adapter yet"):
        render(BRIEF, model="google/gemini-omni-1.2-flash", seconds=8, size=SIZE,
               settings=settings(tmp_path, overrides=overrides))
    assert vendor_server.requests == []


@pytest.mark.parametrize("variable", ["GOOGLE_ACCESS_TOKEN", "GOOGLE_CLOUD_PROJECT"])
def test_missing_credentials_are_a_config_error(
        tmp_path: Path, google: GoogleFake, vendor_server: VendorServer,
        monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError, match=variable):
        run(tmp_path)
    assert vendor_server.requests == []


def test_the_token_never_appears_in_errors(tmp_path: Path, google: GoogleFake,
                                           vendor_server: VendorServer) -> None:
    google.token = "ya29.some-other-token"  # the fake echoes the token it got in its 401
    error = failed(tmp_path, r"authentication failed")
    assert "GOOGLE_ACCESS_TOKEN" in str(error)
    assert all(TOKEN not in (s.error or "") for s in error.shots)
    assert len(predicts(vendor_server)) == 2  # auth errors are not retried


def test_poll_maps_operation_errors(tmp_path: Path, google: GoogleFake,
                                    vendor_server: VendorServer) -> None:
    answers = iter([
        {"name": "op", "done": True, "error": {"code": 13, "message": "Internal error."}},
        {"name": "op", "done": True, "error": {"code": 3, "message": "The prompt violates "
                                               "Vertex AI's usage guidelines."}},
    ])
    # Served ahead of the fake's own route: finished operations carrying an error.
    vendor_server.routes.insert(0, ("POST", re.compile(r".*:fetchPredictOperation$"),
                                    lambda req, m: Response(200, next(answers))))
    provider = GoogleProvider(settings(tmp_path))
    ref = JobRef("google", "projects/p/locations/l/publishers/google/models/m/operations/1")

    async def both() -> list[Any]:
        try:
            return [await provider.poll(ref), await provider.poll(ref)]
        finally:
            await provider.aclose()

    internal, refused = asyncio.run(both())
    assert (internal.state, internal.retryable) == ("failed", True)
    assert (refused.state, refused.retryable) == ("failed", False)
    assert refused.error and refused.error.startswith("moderation: ")
