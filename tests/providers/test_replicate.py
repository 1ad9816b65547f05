"""The Replicate adapter against a fake predictions API, driven through the real render core."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from shotline.api import estimate, render
from shotline.core.capabilities import load_table
from shotline.engine import media
from shotline.engine.renderer import RenderFailed
from shotline.errors import CapabilityError, ConfigError, PermanentError
from shotline.providers.base import JobStatus, ShotRequest
from shotline.providers.http import CLOCK_SLACK
from shotline.providers.replicate import ReplicateProvider, verify_webhook
from shotline.settings import Settings
from shotline.store import ledger
from shotline.store.db import Database

from ..images import image_input
from . import contract
from .contract import accepted, outcomes
from .fake_replicate import MODERATION, TOKEN, ReplicateFake, install_replicate
from .vendor_server import VendorServer

BRIEF = "Shot 1: A red kite rises over the dunes.\nShot 2: A storm rolls in over the sea.\n"
FAST: dict[str, Any] = {"model": "replicate/luma-ray-3.2", "seconds": 10, "size": "540x540"}
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEA"
                       "wS2OUAAAAABJRU5ErkJggg==")  # a 1x1 image, sent inline as a data URI


@pytest.fixture
def rep(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicateFake]:
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("SHOTLINE_REPLICATE_BASE_URL", vendor_server.url)
    yield install_replicate(vendor_server, clip_bytes)


def settings(home: Path, **kw: Any) -> Settings:
    return Settings(home=home, poll_interval=0.02, backoff_base=0.01, **kw)


def run(home: Path, *, config: dict[str, Any] | None = None, **kw: Any) -> Any:
    return render(BRIEF, settings=settings(home, **(config or {})), **{**FAST, **kw})


def rows(home: Path) -> list[dict[str, Any]]:
    return ledger.rows(Database.for_home(home))


def request(model: str, size: str, seconds: int, *, audio: bool = False, seed: int | None = None,
            **kw: Any) -> ShotRequest:
    wire = load_table().get(model).wire_model
    return ShotRequest(model=model, wire_model=wire, prompt="A red kite rises.", seconds=seconds,
                       size=size, fps=24, audio=audio, seed=seed, take=1, key="k" * 16, **kw)


def direct(home: Path, call: Callable[[ReplicateProvider], Any]) -> Any:
    async def go() -> Any:
        provider = ReplicateProvider(settings(home))
        try:
            return await call(provider)
        finally:
            await provider.aclose()
    return asyncio.run(go())


# -- (a) end to end, and the exact bodies ---------------------------------------------------


@pytest.mark.slow
def test_two_shots_render_end_to_end(tmp_path: Path, rep: ReplicateFake) -> None:
    args: dict[str, Any] = {"model": "replicate/google-veo-3.1", "seconds": 8, "size": "1280x720",
                            "audio": True, "seed": 7}
    result = render(BRIEF, settings=settings(tmp_path), **args)
    media.verify(result.output, size=(1280, 720), fps=24, frames=8 * 24, audio=True)
    costs = [s.full_usd for s in estimate(BRIEF, settings=settings(tmp_path), **args).shots]
    paid = rows(tmp_path)
    assert len(paid) == 2 and {r["provider_job_id"] for r in paid} == accepted(rep)
    assert sorted(r["amount"] for r in paid) == sorted(costs)  # not predict_time's 97 s
    assert len(rep.submits) == 2
    for s in rep.submits:
        assert s.endpoint == "google/veo-3.1"
        assert s.headers["authorization"] == f"Bearer {TOKEN}"
        assert "prefer" not in s.headers
        assert set(s.body) == {"input"}
        given = s.body["input"]
        assert set(given) == {"prompt", "duration", "aspect_ratio", "resolution",
                              "generate_audio", "seed"}
        assert isinstance(given["prompt"], str) and given["duration"] == 4
        assert type(given["duration"]) is int and type(given["seed"]) is int and given["seed"] == 7
        assert given["aspect_ratio"] == "16:9" and given["resolution"] == "720p"
        assert given["generate_audio"] is True
    polls = rep.server.calls("GET", r"^/v1/predictions/")
    assert {p.path.rsplit("/", 1)[1] for p in polls} == accepted(rep)


FRAME = "data:image/png;base64," + base64.b64encode(PNG).decode()
P = "A red kite rises."
BODIES = [
    ("replicate/google-veo-3.1", "1080x1920", 6, False, 3, False,
     {"prompt": P, "duration": 6, "aspect_ratio": "9:16", "resolution": "1080p",
      "generate_audio": False, "seed": 3}),
    ("replicate/runwayml-gen4-turbo", "1104x832", 5, False, 9, True,
     {"prompt": P, "duration": 5, "aspect_ratio": "4:3", "image": FRAME, "seed": 9}),
    ("replicate/luma-ray-3.2", "2520x1080", 10, False, 4, False,
     {"prompt": P, "duration": 10, "aspect_ratio": "21:9", "resolution": "1080p"}),
    ("replicate/luma-ray-3.2", "720x720", 5, False, None, True,
     {"prompt": P, "duration": 5, "aspect_ratio": "1:1", "resolution": "720p",
      "start_image": FRAME}),
]


@pytest.mark.parametrize(("model", "size", "seconds", "audio", "seed", "frame", "body"), BODIES,
                         ids=["veo-3.1", "gen4-turbo", "ray-3.2", "ray-3.2-frame"])
def test_each_family_sends_its_documented_body(
        tmp_path: Path, rep: ReplicateFake, model: str, size: str, seconds: int, audio: bool,
        seed: int | None, frame: bool, body: dict[str, Any]) -> None:
    first = image_input(PNG)
    req = request(model, size, seconds, audio=audio, seed=seed, first_frame=first if frame else None)
    ref = direct(tmp_path, lambda p: p.submit(req))
    (sent,) = rep.submits
    assert sent.endpoint == req.wire_model and sent.body == {"input": body}
    assert {k: type(v) for k, v in sent.body["input"].items()} == {k: type(v) for k, v in body.items()}
    assert ref.provider == "replicate" and ref.job_id == sent.job_id


def test_poll_maps_the_states_and_cancel_posts(tmp_path: Path, rep: ReplicateFake) -> None:
    req = request("replicate/luma-ray-3.2", "540x540", 5)

    async def go(p: ReplicateProvider) -> tuple[list[JobStatus], JobStatus, bool]:
        ref = await p.submit(req)
        states = [await p.poll(ref) for _ in range(3)]
        other = await p.submit(req)
        cancelled = await p.cancel(other)
        return states, await p.poll(other), cancelled

    states, after_cancel, cancelled = direct(tmp_path, go)
    assert [s.state for s in states] == ["queued", "running", "succeeded"]
    assert cancelled and rep.server.calls("POST", r"/cancel$")
    assert after_cancel.state == "failed" and not after_cancel.retryable
    assert after_cancel.error == "the prediction was canceled"


# -- (b)-(g) faults through the core ---------------------------------------------------------


@pytest.mark.slow
def test_429_with_retry_after_is_retried_after_that_delay(tmp_path: Path, rep: ReplicateFake) -> None:
    contract.storm_429_retried(tmp_path, rep, lambda: run(tmp_path))


@pytest.mark.slow
def test_a_burst_of_503s_is_retried_and_a_list_output_is_fetched(
        tmp_path: Path, rep: ReplicateFake) -> None:
    rep.output_list = True
    rep.on("storm", "503", times=3)
    result = run(tmp_path)
    assert result.seconds == pytest.approx(10, abs=1 / 24)
    assert [s.job_id is None for s in rep.posts_for("storm")] == [True, True, True, False]
    assert {r["provider_job_id"] for r in rows(tmp_path)} == accepted(rep)


@pytest.mark.slow
def test_moderation_fails_with_the_vendors_words_and_is_not_resubmitted(
        tmp_path: Path, rep: ReplicateFake) -> None:
    rep.on("storm", "moderation")
    with pytest.raises(RenderFailed, match=r"shot 2: .*flagged as sensitive.*\(E005\)") as info:
        run(tmp_path)
    assert MODERATION in str(info.value) and TOKEN not in str(info.value)
    assert len(rep.posts_for("storm")) == 1
    (kite,) = rep.posts_for("kite")
    assert [r["provider_job_id"] for r in rows(tmp_path)] == [kite.job_id]


@pytest.mark.slow
def test_a_transient_job_failure_is_resubmitted_and_not_billed(
        tmp_path: Path, rep: ReplicateFake) -> None:
    contract.storm_failure_resubmitted(tmp_path, rep, lambda: run(tmp_path))


@pytest.mark.slow
def test_a_submit_timeout_is_found_in_the_list_not_resubmitted(tmp_path: Path,
                                                               rep: ReplicateFake) -> None:
    contract.dips_submit_timeout_reconciled(
        tmp_path, rep, lambda: run(tmp_path, config={"provider_timeout": 0.5}), word="storm")
    posts = [r for r in rep.server.calls("POST", "/predictions$")
             if "storm" in r.json()["input"]["prompt"]]
    assert len(posts) == 1


def test_find_matches_the_exact_input_after_the_submit_across_pages(
        tmp_path: Path, rep: ReplicateFake) -> None:
    mine = request("replicate/luma-ray-3.2", "540x540", 5)
    other = dataclasses.replace(mine, prompt="Another prompt.")

    async def go(p: ReplicateProvider) -> tuple[Any, ...]:
        before = time.time()
        made = await p.submit(mine)
        for _ in range(3):  # newer predictions push ours to a later page of the list
            await p.submit(other)
        found = await p.find(mine, before)
        later = await p.find(mine, time.time() + CLOCK_SLACK + 60)  # a later take's lookup
        missing = await p.find(dataclasses.replace(mine, seconds=10), before)
        return made, found, later, missing

    made, found, later, missing = direct(tmp_path, go)
    assert found is not None and found.job_id == made.job_id
    assert later is None and missing is None
    assert len(rep.server.calls("GET", "^/v1/predictions$")) >= 3  # it followed the cursor


@pytest.mark.slow
def test_a_truncated_download_fails_the_shot_without_a_second_submit(
        tmp_path: Path, rep: ReplicateFake) -> None:
    rep.on("storm", "truncate")
    with pytest.raises(RenderFailed, match="shot 2: .*unusable file"):
        run(tmp_path)
    assert len(rep.posts_for("storm")) == 1
    assert outcomes(tmp_path, rep) == {"kite": "succeeded", "storm": "undelivered"}


@pytest.mark.slow
def test_an_expired_file_url_says_so(tmp_path: Path, rep: ReplicateFake) -> None:
    rep.on("storm", "expire")
    with pytest.raises(RenderFailed, match="shot 2: .*403: it has expired"):
        run(tmp_path)
    assert len(rep.posts_for("storm")) == 1
    assert outcomes(tmp_path, rep) == {"kite": "succeeded", "storm": "undelivered"}


# -- (h)-(j) refused before any call; secrets ------------------------------------------------


@pytest.mark.parametrize("kw", [{"size": "640x360"}, {"audio": True},
                                {"model": "replicate/runwayml-gen4-turbo", "size": "1280x720"}],
                         ids=["size", "audio", "no-first-frame"])
def test_what_the_model_cannot_do_is_refused_before_any_call(
        tmp_path: Path, rep: ReplicateFake, kw: dict[str, Any]) -> None:
    with pytest.raises(CapabilityError):
        run(tmp_path, **kw)
    assert rep.server.requests == []


@pytest.mark.parametrize(("req", "words"), [
    (request("replicate/google-veo-3.1", "640x360", 4), "size 640x360"),
    (request("replicate/luma-ray-3.2", "540x540", 5, audio=True), "audio"),
    (request("replicate/runwayml-gen4-turbo", "1280x720", 5), "needs a first frame"),
    (request("replicate/luma-ray-3.2", "540x540", 10, first_frame=image_input(b"f")), "text-only"),
    (request("replicate/runwayml-gen4-turbo", "1280x720", 5, last_frame=image_input(b"f")), "last frame"),
], ids=["size", "audio", "gen4-text", "ray-10s-image", "gen4-last-frame"])
def test_the_adapter_itself_refuses_before_any_call(
        tmp_path: Path, rep: ReplicateFake, req: ShotRequest, words: str) -> None:
    with pytest.raises(CapabilityError, match=words):
        direct(tmp_path, lambda p: p.submit(req))
    assert rep.server.requests == []


def test_a_missing_key_is_a_config_error_naming_the_variable(
        tmp_path: Path, rep: ReplicateFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        run(tmp_path)
    assert rep.server.requests == []


@pytest.mark.slow
def test_a_wrong_key_never_appears_in_the_error(tmp_path: Path, rep: ReplicateFake,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "r8_wrong-token-987654"
    monkeypatch.setenv("REPLICATE_API_TOKEN", wrong)
    with pytest.raises(RenderFailed, match="401: authentication failed") as info:
        run(tmp_path)
    assert wrong not in str(info.value) and "[redacted]" in str(info.value)
    assert rows(tmp_path) == []


# -- webhooks --------------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()


def signed(body: bytes, at: datetime, secret: str = SECRET) -> dict[str, str]:
    signature = Webhook(secret).sign("msg_2Lh9KRb0pzN4LePd3XiA4xQOM", at, body.decode())
    return {"Webhook-Id": "msg_2Lh9KRb0pzN4LePd3XiA4xQOM",
            "Webhook-Timestamp": str(int(at.timestamp())), "Webhook-Signature": signature}


BODY = json.dumps({"id": "ufawqhfynnddngldkgtslldrkq", "status": "succeeded",
                   "output": "https://replicate.delivery/x/out.mp4"}).encode()


def test_a_signed_webhook_gives_the_prediction_id() -> None:
    assert verify_webhook(BODY, signed(BODY, datetime.now(UTC)), SECRET) == "ufawqhfynnddngldkgtslldrkq"


def test_a_tampered_webhook_is_rejected() -> None:
    headers = signed(BODY, datetime.now(UTC))
    with pytest.raises(PermanentError, match="No matching signature"):
        verify_webhook(BODY.replace(b"succeeded", b"failed"), headers, SECRET)
    other = "whsec_" + base64.b64encode(b"another secret, 24 bytes").decode()
    with pytest.raises(PermanentError, match="No matching signature"):
        verify_webhook(BODY, headers, other)
    with pytest.raises(PermanentError, match="webhook rejected"):
        verify_webhook(BODY, {**headers, "Webhook-Signature": "garbage"}, SECRET)


def test_a_stale_webhook_is_rejected() -> None:
    with pytest.raises(PermanentError, match="too old"):
        verify_webhook(BODY, signed(BODY, datetime.now(UTC) - timedelta(minutes=10)), SECRET)


def test_a_signed_webhook_is_only_a_hint_that_triggers_a_poll(tmp_path: Path, rep: ReplicateFake,
                                                              vendor_server: VendorServer) -> None:
    from shotline.service import vendor_webhooks

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    shot = request("replicate/luma-ray-3.2", "540x540", 5)
    ref = direct(tmp_path, lambda p: p.submit(shot))
    # The delivery claims success; the vendor, asked, says the prediction is still going.
    body = json.dumps({"id": ref.job_id, "status": "succeeded"}).encode()
    when = datetime.now(UTC)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(when.timestamp())),
               "webhook-signature": Webhook(secret).sign("msg_1", when, body.decode())}
    db = Database.for_home(tmp_path)

    def deliver() -> Any:
        return direct(tmp_path, lambda p: vendor_webhooks.handle(p, db, body, headers, secret))

    polls = len(vendor_server.calls("GET", f"/v1/predictions/{ref.job_id}"))
    job_id, status = deliver()
    assert job_id == ref.job_id and status.state != "succeeded"
    assert len(vendor_server.calls("GET", f"/v1/predictions/{ref.job_id}")) == polls + 1
    assert deliver() is None  # a redelivery of msg_1 is ignored: no second poll
    assert len(vendor_server.calls("GET", f"/v1/predictions/{ref.job_id}")) == polls + 1
