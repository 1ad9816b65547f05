"""Each adapter against its vendor's official Python SDK (test-only dependencies).

Two checks per vendor, both on real local sockets:

* **Requests.** The SDK and shotline each make the same request to one capture server
  (a :class:`VendorServer` that records everything and answers a canned body); method,
  path, body and auth scheme must agree. Where an SDK cannot be pointed at a local server
  (xAI's is gRPC), shotline's body is checked field by field against the SDK's request
  message instead.
* **Answers.** Jobs built from the SDK's own response types, for every status word the
  SDK defines (finished, failed, in progress), are served to the adapter, which must read
  each one correctly; a finished job's file must download.

Our own fakes (``fake_*.py``) stay for faults and whole flows; this module pins the wire
format to what the vendors' SDKs say today.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pytest

from shotline.core.capabilities import load_table
from shotline.providers.base import JobRef, JobStatus, Provider, ShotRequest
from shotline.settings import Settings

from ..images import image_input
from .vendor_server import Request, Response, VendorServer

KEY = "sdk-test-key-123456"
CLIP = b"\x00\x00\x00\x18ftypmp42 not a real clip"


@pytest.fixture
def capture() -> Iterator[VendorServer]:
    server = VendorServer().start()
    try:
        yield server
    finally:
        server.stop()


def answer(server: VendorServer, method: str, pattern: str, body: Any,
           status: int = 200) -> None:
    """Answer every ``method`` request whose path matches ``pattern`` with ``body``."""
    server.routes.insert(0, (method, re.compile(pattern + "$"),
                             lambda req, m: Response(status, body)))


def serve_file(server: VendorServer) -> str:
    server.route("GET", r"/files/out\.mp4")(lambda req, m: Response(200, body=CLIP))
    return f"{server.url}/files/out.mp4"


def request(model: str, *, seconds: int | None = None, size: str | None = None,
            audio: bool = False, seed: int | None = 7, **kw: Any) -> ShotRequest:
    caps = load_table().get(model)
    return ShotRequest(model=model, wire_model=caps.wire_model, prompt="A red kite rises.",
                       seconds=seconds or caps.durations[0], size=size or caps.default_size,
                       fps=24, audio=audio, seed=seed, take=1, key="k" * 16, **kw)


def use(factory: Callable[[Settings], Provider], home: Path,
        go: Callable[[Any], Any]) -> Any:
    async def main() -> Any:
        provider = factory(Settings(home=home))
        try:
            return await go(provider)
        finally:
            await provider.aclose()
    return asyncio.run(main())


def polled(factory: Callable[[Settings], Provider], home: Path, ref: JobRef) -> JobStatus:
    return typing.cast(JobStatus, use(factory, home, lambda p: p.poll(ref)))


def literal_words(annotation: Any) -> list[str]:
    """Every string of the Literal inside ``annotation`` (Optional/Union unwrapped)."""
    found: list[str] = []
    for arg in typing.get_args(annotation):
        found += literal_words(arg) if typing.get_origin(arg) is not None else []
        if isinstance(arg, str):
            found.append(arg)
    return found


@pytest.fixture
def close_later() -> Iterator[Callable[[Any], Any]]:
    """Close each SDK client at the end of the test (their pools hold sockets)."""
    clients: list[Any] = []
    yield lambda client: clients.append(client) or client
    for client in clients:
        if hasattr(client, "close"):
            client.close()
        else:  # replicate's and fal's clients keep an httpx client inside
            client._client.close()


def only(server: VendorServer, method: str) -> Request:
    [sent] = server.calls(method)
    server.requests.clear()
    return sent


# ------------------------------------------------------------------------------- Runway


def test_runway_requests_match_the_sdk_and_every_task_status_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    import runwayml
    from runwayml.types import task_retrieve_response as task_types
    from runwayml.types import text_to_video_create_params as text_params

    from shotline.providers.runway import RunwayProvider

    monkeypatch.setenv("RUNWAYML_API_SECRET", KEY)
    monkeypatch.setenv("SHOTLINE_RUNWAY_BASE_URL", capture.url)
    answer(capture, "POST", r"/v1/text_to_video", {"id": "task-1"})
    sdk = close_later(runwayml.RunwayML(api_key=KEY, base_url=capture.url, max_retries=0))
    cases = [
        request("runway/gen4.5", size="1280x720"),
        request("runway/veo3.1", size="1920x1080", audio=True),  # veo3.1 takes a seed
        request("runway/kling3.0_pro", audio=True, seed=None),
        request("runway/seedance2", seconds=9),
        request("runway/seedance2", seconds=9, references=(image_input(b"\x89PNG maya"),)),
        request("runway/hailuo3", seed=None),  # a named ratio and a resolution tier
        request("runway/gemini_omni_flash", seed=None, audio=True),
    ]
    params = {typing.get_type_hints(t)["model"].__args__[0]: t
              for t in typing.get_args(text_params.TextToVideoCreateParams)}
    for case in cases:
        path, ours = use(RunwayProvider, tmp_path, lambda p, c=case: asyncio.sleep(0, p.endpoint(c)))
        kwargs = {re.sub(r"([A-Z])", r"_\1", k).lower(): v for k, v in ours.items()}
        # The SDK's request type for this model: we send only its fields, and we send its
        # seed and audio switch whenever the shot has them (veo3.1 takes a seed).
        declared = set(params[case.wire_model].__annotations__)
        assert set(kwargs) <= declared, set(kwargs) - declared
        assert ("seed" in kwargs) == ("seed" in declared and case.seed is not None)
        assert ("audio" in kwargs) == ("audio" in declared)
        sdk.text_to_video.create(**kwargs)
        theirs = only(capture, "POST")
        use(RunwayProvider, tmp_path, lambda p, c=case: p.submit(c))
        mine = only(capture, "POST")
        assert (mine.path, mine.json()) == (theirs.path, theirs.json()) == (path, ours)
        assert mine.headers["x-runway-version"] == theirs.headers["x-runway-version"]
        assert mine.headers["authorization"] == theirs.headers["authorization"]

    url = serve_file(capture)
    common = {"id": "task-1", "createdAt": "2026-11-24T12:00:00Z"}
    cost = {"credits": 40}
    built = {
        "PENDING": task_types.Pending(**common, estimatedCost=cost, status="PENDING"),
        "THROTTLED": task_types.Throttled(**common, estimatedCost=cost, status="THROTTLED"),
        "RUNNING": task_types.Running(**common, estimatedCost=cost, progress=0.4,
                                      status="RUNNING"),
        "SUCCEEDED": task_types.Succeeded(**common, cost=cost, output=[url],
                                          status="SUCCEEDED"),
        "FAILED": task_types.Failed(**common, cost=cost, failure="Output flagged",
                                    failureCode="SAFETY.OUTPUT.VIDEO", status="FAILED"),
        "CANCELLED": task_types.Cancelled(**common, cost=cost, status="CANCELLED"),
    }
    words = {literal_words(cls.model_fields["status"].annotation)[0]
             for cls in typing.get_args(typing.get_args(task_types.TaskRetrieveResponse)[0])}
    assert set(built) == words  # every status the SDK defines
    expected = {"PENDING": "queued", "THROTTLED": "queued", "RUNNING": "running",
                "SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "failed"}
    ref = JobRef("runway", "task-1")
    for word, task in built.items():
        answer(capture, "GET", r"/v1/tasks/task-1", json.loads(task.model_dump_json(by_alias=True)))
        status = polled(RunwayProvider, tmp_path, ref)
        assert status.state == expected[word], word
        if word == "FAILED":
            assert status.error and "moderation" in status.error and not status.retryable
        if word == "RUNNING":
            assert status.progress == pytest.approx(0.4)
    answer(capture, "GET", r"/v1/tasks/task-1",
           json.loads(built["SUCCEEDED"].model_dump_json(by_alias=True)))
    dest = use(RunwayProvider, tmp_path, lambda p: p.download(ref, tmp_path / "r.mp4"))
    assert dest.read_bytes() == CLIP


# --------------------------------------------------------------------------------- Luma


def test_luma_agents_requests_match_the_sdk_and_every_state_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    import luma_agents
    from luma_agents.types import (
        Generation,
        GenerationCreateParams,
        VideoDuration,
        VideoOptionsParam,
        VideoResolution,
    )

    from shotline.providers.luma import LumaProvider

    monkeypatch.setenv("LUMAAI_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_LUMA_BASE_URL", capture.url + "/v1")
    first = image_input(b"\x89PNG\r\n\x1a\n frame")
    generation = {"id": "gen-1", "created_at": "2026-11-24T12:00:00Z", "model": "ray-3.2",
                  "state": "queued", "type": "video"}
    answer(capture, "POST", r"/v1/generations", generation)
    sdk = close_later(luma_agents.Luma(auth_token=KEY, base_url=capture.url + "/v1", max_retries=0))
    for case in (request("luma/ray-3.2", size="1920x1080", seconds=10),
                 request("luma/ray-3.2", size="540x960", first_frame=first)):
        api, ours = use(LumaProvider, tmp_path, lambda p, c=case: asyncio.sleep(0, p.route(c)))
        assert api == "agents"
        assert set(ours) <= set(GenerationCreateParams.__annotations__)
        assert set(ours["video"]) <= set(VideoOptionsParam.__annotations__)
        assert ours["video"]["duration"] in literal_words(VideoDuration)
        assert ours["video"]["resolution"] in literal_words(VideoResolution)
        sdk.generations.create(**ours)
        theirs = only(capture, "POST")
        use(LumaProvider, tmp_path, lambda p, c=case: p.submit(c))
        mine = only(capture, "POST")
        assert (mine.path, mine.json()) == (theirs.path, theirs.json())
        assert mine.headers["authorization"] == theirs.headers["authorization"]
    assert mine.json()["video"]["start_frame"] == {
        "data": base64.b64encode(first.data).decode(), "media_type": "image/png"}

    url = serve_file(capture)
    states = literal_words(Generation.model_fields["state"].annotation)
    assert set(states) == {"queued", "processing", "completed", "failed"}
    expected = {"queued": "queued", "processing": "running", "completed": "succeeded",
                "failed": "failed"}
    ref = JobRef("luma", "gen-1", {"api": "agents"})
    for state in states:
        extra: dict[str, Any] = {}
        if state == "completed":
            extra = {"output": [{"type": "image", "url": url + "?thumb"},
                                {"type": "video", "url": url}]}
        if state == "failed":
            extra = {"failure_code": "content_moderated", "failure_reason": "Blocked"}
        job = Generation(**{**generation, "state": state, **extra})
        answer(capture, "GET", r"/v1/generations/gen-1", json.loads(job.model_dump_json()))
        status = polled(LumaProvider, tmp_path, ref)
        assert status.state == expected[state], state
        if state == "failed":
            assert not status.retryable and "moderation" in (status.error or "")
    answer(capture, "GET", r"/v1/generations/gen-1", json.loads(Generation(
        **{**generation, "state": "completed",
           "output": [{"type": "video", "url": url}]}).model_dump_json()))
    dest = use(LumaProvider, tmp_path, lambda p: p.download(ref, tmp_path / "l.mp4"))
    assert dest.read_bytes() == CLIP


def test_dream_machine_requests_match_the_sdk_and_every_state_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    import lumaai
    from lumaai.types import Generation, GenerationListResponse

    from shotline.providers.luma import LumaProvider

    monkeypatch.setenv("LUMAAI_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_LUMA_LEGACY_BASE_URL", capture.url + "/dream-machine/v1")
    base = {"id": "gen-2", "created_at": "2026-11-24T12:00:00Z", "model": "ray-2",
            "generation_type": "video"}
    answer(capture, "POST", r"/dream-machine/v1/generations/video", {**base, "state": "queued"})
    sdk = close_later(lumaai.LumaAI(auth_token=KEY, base_url=capture.url + "/dream-machine/v1",
                                    max_retries=0))
    case = request("luma/ray-2", size="1680x720", seconds=9)
    _, ours = use(LumaProvider, tmp_path, lambda p: asyncio.sleep(0, p.route(case)))
    sdk.generations.create(**ours)
    theirs = only(capture, "POST")
    use(LumaProvider, tmp_path, lambda p: p.submit(case))
    mine = only(capture, "POST")
    assert (mine.path, mine.json()) == (theirs.path, theirs.json())
    assert mine.path == "/dream-machine/v1/generations/video"

    url = serve_file(capture)
    states = literal_words(Generation.model_fields["state"].annotation)
    assert set(states) == {"queued", "dreaming", "completed", "failed"}
    expected = {"queued": "queued", "dreaming": "running", "completed": "succeeded",
                "failed": "failed"}
    ref = JobRef("luma", "gen-2", {"api": "legacy"})
    for state in states:
        extra: dict[str, Any] = {"assets": {"video": url}} if state == "completed" else {}
        job = Generation(**{**base, "state": state, **extra})
        answer(capture, "GET", r"/dream-machine/v1/generations/gen-2",
               json.loads(job.model_dump_json()))
        assert polled(LumaProvider, tmp_path, ref).state == expected[state], state
    answer(capture, "GET", r"/dream-machine/v1/generations/gen-2", json.loads(Generation(
        **{**base, "state": "completed", "assets": {"video": url}}).model_dump_json()))
    dest = use(LumaProvider, tmp_path, lambda p: p.download(ref, tmp_path / "d.mp4"))
    assert dest.read_bytes() == CLIP

    # find() reads the SDK's list type: the generation made from our request is found.
    made = Generation(**{**base, "state": "dreaming", "request": {**ours}})
    other = Generation(**{**base, "id": "gen-3", "state": "queued",
                          "request": {**ours, "prompt": "Another."}})
    listing = GenerationListResponse(generations=[other, made], count=2, has_more=False)
    answer(capture, "GET", r"/dream-machine/v1/generations", json.loads(listing.model_dump_json()))
    found = use(LumaProvider, tmp_path, lambda p: p.find(case, 1764000000.0))
    assert found is not None and found.job_id == "gen-2"
    [listed] = capture.calls("GET", r"/generations$")
    assert listed.query["limit"] and listed.query["offset"] == ["0"]


# ---------------------------------------------------------------------------- Replicate


def test_replicate_requests_match_the_sdk_and_every_status_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    import replicate
    from replicate.prediction import Prediction

    from shotline.providers.replicate import ReplicateProvider

    monkeypatch.setenv("REPLICATE_API_TOKEN", KEY)
    monkeypatch.setenv("SHOTLINE_REPLICATE_BASE_URL", capture.url)
    base = {"id": "p1", "model": "google/veo-3.1", "version": "v", "input": {},
            "output": None, "logs": "", "error": None, "metrics": {},
            "created_at": "2026-11-24T12:00:00Z", "urls": {}}
    answer(capture, "POST", r"/v1/models/[^/]+/[^/]+/predictions", {**base, "status": "starting"},
           201)
    sdk = close_later(replicate.Client(api_token=KEY, base_url=capture.url))
    for case in (request("replicate/google-veo-3.1", size="1920x1080", audio=True),
                 request("replicate/luma-ray-3.2", seed=None)):
        ours = use(ReplicateProvider, tmp_path, lambda p, c=case: asyncio.sleep(0, p.body(c)))
        sdk.models.predictions.create(model=case.wire_model, input=ours)
        theirs = only(capture, "POST")
        use(ReplicateProvider, tmp_path, lambda p, c=case: p.submit(c))
        mine = only(capture, "POST")
        assert (mine.path, mine.json()) == (theirs.path, theirs.json())
        assert mine.headers["authorization"] == theirs.headers["authorization"]

    url = serve_file(capture)
    words = literal_words(Prediction.__annotations__["status"])  # a pydantic v1 model
    assert set(words) == {"starting", "processing", "succeeded", "failed", "canceled"}
    expected = {"starting": "queued", "processing": "running", "succeeded": "succeeded",
                "failed": "failed", "canceled": "failed"}
    ref = JobRef("replicate", "p1")
    for word in words:
        extra: dict[str, Any] = {"output": url} if word == "succeeded" else {}
        if word == "failed":
            extra = {"error": "The input or output was flagged as sensitive. (E005)"}
        p = Prediction(**{**base, "status": word, **extra})
        answer(capture, "GET", r"/v1/predictions/p1", json.loads(p.json()))
        status = polled(ReplicateProvider, tmp_path, ref)
        assert status.state == expected[word], word
        if word == "failed":
            assert not status.retryable
    answer(capture, "GET", r"/v1/predictions/p1",
           json.loads(Prediction(**{**base, "status": "succeeded", "output": url}).json()))
    dest = use(ReplicateProvider, tmp_path, lambda p: p.download(ref, tmp_path / "p.mp4"))
    assert dest.read_bytes() == CLIP


# ---------------------------------------------------------------------------------- fal


def test_fal_requests_match_the_sdk_and_every_status_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    import fal_client
    import fal_client.client as fal_internals

    from shotline.providers.fal import FalProvider

    monkeypatch.setenv("FAL_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_FAL_BASE_URL", capture.url)
    # The SDK's queue host is a module constant; point it at the capture server.
    monkeypatch.setattr(fal_internals, "QUEUE_URL_FORMAT", capture.url + "/")
    handle = {"request_id": "r1", "status_url": f"{capture.url}/o/a/requests/r1/status",
              "response_url": f"{capture.url}/o/a/requests/r1",
              "cancel_url": f"{capture.url}/o/a/requests/r1/cancel"}
    answer(capture, "POST", r"/.+", handle)
    sdk = close_later(fal_client.SyncClient(key=KEY))
    for model in ("fal/kling-video-v3-pro", "fal/seedance-2.0", "fal/wan-2.7",
                  "fal/veo-3.1-fast"):
        case = request(model, audio=load_table().get(model).audio != "none")
        ours = use(FalProvider, tmp_path, lambda p, c=case: asyncio.sleep(0, p.body(c)))
        sdk.submit(case.wire_model, arguments=ours)
        theirs = only(capture, "POST")
        use(FalProvider, tmp_path, lambda p, c=case: p.submit(c))
        mine = only(capture, "POST")
        assert (mine.path, mine.json()) == (theirs.path, theirs.json())
        assert mine.headers["authorization"] == theirs.headers["authorization"] == f"Key {KEY}"

    # Status answers the SDK itself parses, one per status word it knows.
    shapes = {"IN_QUEUE": {"queue_position": 2}, "IN_PROGRESS": {"logs": None},
              "COMPLETED": {"logs": None, "metrics": {}}}
    parse = fal_client.SyncRequestHandle.from_request_id
    sdk_handle = parse(sdk._client, "o/a", "r1")
    expected = {"IN_QUEUE": "queued", "IN_PROGRESS": "running", "COMPLETED": "succeeded"}
    ref = JobRef("fal", "r1", {k: v for k, v in handle.items() if k != "request_id"})
    for word, shape in shapes.items():
        body = {"status": word, **shape}
        sdk_status = sdk_handle._parse_status(body)  # what the SDK makes of it
        assert type(sdk_status).__name__ == {"IN_QUEUE": "Queued", "IN_PROGRESS": "InProgress",
                                             "COMPLETED": "Completed"}[word]
        answer(capture, "GET", r"/o/a/requests/r1/status", body)
        assert polled(FalProvider, tmp_path, ref).state == expected[word], word
    failed = {"status": "COMPLETED", "logs": None, "metrics": {},
              "error": "flagged by a content checker", "error_type": "content_policy_violation"}
    assert sdk_handle._parse_status(failed).error_type == "content_policy_violation"
    answer(capture, "GET", r"/o/a/requests/r1/status", failed)
    status = polled(FalProvider, tmp_path, ref)
    assert status.state == "failed" and not status.retryable


# ------------------------------------------------------------------------------- OpenAI


def multipart_fields(req: Request) -> dict[str, str]:
    """The form fields of a multipart/form-data body, as the SDK sends them."""
    head = f"Content-Type: {req.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + req.body)
    return {part.get_param("name", header="content-disposition"): part.get_content()
            for part in message.iter_parts()}


def test_openai_requests_match_the_sdk_and_every_status_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    import openai
    from openai.types import Video

    from shotline.providers.openai import OpenAIProvider

    overrides = tmp_path / "o.toml"
    overrides.write_text('[models."openai/gw"]\nreason = "test"\nexpires = 2099-01-01\n'
                         'wire_model = "sora-2"\ndurations = [4, 8, 12]\nmax_seconds = 12\n'
                         'sizes = ["1280x720"]\nfps = [24]\naudio = "always"\n'
                         'prices = { "720p" = 0.1 }\n')
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_OPENAI_BASE_URL", capture.url)
    video = {"id": "video_1", "object": "video", "model": "sora-2", "status": "queued",
             "progress": 0, "created_at": 1764000000, "seconds": "8", "size": "1280x720",
             "prompt": "A red kite rises."}
    answer(capture, "POST", r"/v1/videos", video)
    sdk = close_later(openai.OpenAI(api_key=KEY, base_url=capture.url + "/v1", max_retries=0))

    def provider(settings: Settings) -> OpenAIProvider:
        return OpenAIProvider(settings.model_copy(update={"overrides": overrides}))

    case = ShotRequest(model="openai/gw", wire_model="sora-2", prompt="A red kite rises.",
                       seconds=8, size="1280x720", fps=24, audio=True, seed=None, take=1,
                       key="k" * 16)
    ours = use(provider, tmp_path, lambda p: asyncio.sleep(0, p.body(case)))
    with pytest.deprecated_call():  # the SDK marks the Sora-era API; gateways keep it
        sdk.videos.create(**ours)
    theirs = only(capture, "POST")
    use(provider, tmp_path, lambda p: p.submit(case))
    mine = only(capture, "POST")
    # The SDK sends the same fields as multipart (for its optional upload); we send JSON.
    assert mine.path == theirs.path == "/v1/videos"
    assert multipart_fields(theirs) == {k: str(v) for k, v in mine.json().items()}
    assert mine.headers["authorization"] == theirs.headers["authorization"]

    serve = capture.route("GET", r"/v1/videos/video_1/content")
    serve(lambda req, m: Response(200, body=CLIP))
    words = literal_words(Video.model_fields["status"].annotation)
    assert set(words) == {"queued", "in_progress", "completed", "failed"}
    expected = {"queued": "queued", "in_progress": "running", "completed": "succeeded",
                "failed": "failed"}
    ref = JobRef("openai", "video_1")
    for word in words:
        extra: dict[str, Any] = {}
        if word == "failed":
            extra = {"error": {"code": "moderation_blocked", "message": "Blocked."}}
        v = Video(**{**video, "status": word, "progress": 40, **extra})
        answer(capture, "GET", r"/v1/videos/video_1", json.loads(v.model_dump_json()))
        status = polled(provider, tmp_path, ref)
        assert status.state == expected[word], word
        if word == "failed":
            assert not status.retryable and "moderation" in (status.error or "")
    dest = use(provider, tmp_path, lambda p: p.download(ref, tmp_path / "o.mp4"))
    assert dest.read_bytes() == CLIP

    # find() walks the SDK's list page; the SDK can read the same page.
    page = {"object": "list", "data": [{**video, "status": "in_progress"}],
            "first_id": "video_1", "last_id": "video_1", "has_more": False}
    answer(capture, "GET", r"/v1/videos", page)
    with pytest.deprecated_call():
        assert [v.id for v in sdk.videos.list(order="desc")] == ["video_1"]
    found = use(provider, tmp_path, lambda p: p.find(case, 1764000000.0))
    assert found is not None and found.job_id == "video_1"


# ----------------------------------------------------------------------------- BytePlus


def test_byteplus_requests_match_the_sdk_and_every_status_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    from byteplussdkarkruntime import Ark
    from byteplussdkarkruntime.types.content_generation.content_generation_task import (
        ContentGenerationTask,
    )

    from shotline.providers.byteplus import BytePlusProvider

    monkeypatch.setenv("ARK_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_BYTEPLUS_BASE_URL", capture.url)
    answer(capture, "POST", r"/api/v3/contents/generations/tasks", {"id": "cgt-1"})
    sdk = close_later(Ark(base_url=capture.url + "/api/v3", api_key=KEY, max_retries=0))
    first = image_input(b"\x89PNG\r\n\x1a\n frame")
    case = request("byteplus/dreamina-seedance-2-0-260128", size="1280x720", seconds=6,
                   audio=True, first_frame=first)
    ours = use(BytePlusProvider, tmp_path, lambda p: asyncio.sleep(0, p.body(case)))
    sdk.content_generation.tasks.create(**ours)
    theirs = only(capture, "POST")
    use(BytePlusProvider, tmp_path, lambda p: p.submit(case))
    mine = only(capture, "POST")
    sent_by_sdk = {k: v for k, v in theirs.json().items() if v is not None}
    assert mine.path == theirs.path and mine.json() == sent_by_sdk
    assert mine.headers["authorization"] == theirs.headers["authorization"]

    url = serve_file(capture)
    task = {"id": "cgt-1", "model": case.wire_model, "created_at": 1764000000,
            "updated_at": 1764000100}
    # The SDK types status as a plain string and names its words in the field's docstring.
    source = inspect.getsource(ContentGenerationTask)
    said = re.search(r"status: str\s+\"\"\"The status of the task \(([^)]*)\)", source)
    assert said is not None
    words = {w.strip() for w in said.group(1).split(",")}
    expected = {"queued": "queued", "running": "running", "succeeded": "succeeded",
                "failed": "failed", "cancelled": "failed"}
    assert set(expected) == words
    ref = JobRef("byteplus", "cgt-1")
    for word, state in expected.items():
        extra: dict[str, Any] = {}
        if word == "succeeded":
            extra = {"content": {"video_url": url, "last_frame_url": "", "file_url": ""}}
        if word == "failed":
            extra = {"error": {"code": "OutputVideoSensitiveContentDetected",
                               "message": "The output may contain sensitive content."}}
        built = ContentGenerationTask.model_construct(**task, status=word, **extra)
        answer(capture, "GET", r"/api/v3/contents/generations/tasks/cgt-1",
               json.loads(built.model_dump_json(exclude_unset=True)))
        status = polled(BytePlusProvider, tmp_path, ref)
        assert status.state == state, word
        if word == "failed":
            assert not status.retryable and "moderation" in (status.error or "")
    answer(capture, "GET", r"/api/v3/contents/generations/tasks/cgt-1", json.loads(
        ContentGenerationTask.model_construct(**task, status="succeeded", content={
            "video_url": url}).model_dump_json(exclude_unset=True)))
    dest = use(BytePlusProvider, tmp_path, lambda p: p.download(ref, tmp_path / "b.mp4"))
    assert dest.read_bytes() == CLIP


# ------------------------------------------------------------------------------- Google


def test_google_requests_match_the_sdk_and_every_operation_outcome_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch,
        close_later: Callable[[Any], Any]) -> None:
    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    from shotline.providers.google import GoogleProvider

    monkeypatch.setenv("GOOGLE_ACCESS_TOKEN", KEY)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    monkeypatch.setenv("SHOTLINE_GOOGLE_BASE_URL", capture.url)
    model_path = "/v1/projects/proj/locations/us-central1/publishers/google/models/" \
                 "veo-3.1-generate-001"
    name = model_path.removeprefix("/v1/") + "/operations/op-1"
    answer(capture, "POST", re.escape(model_path) + ":predictLongRunning", {"name": name})
    sdk = close_later(genai.Client(
        vertexai=True, project="proj", location="us-central1",
        credentials=google.oauth2.credentials.Credentials(token=KEY),
        http_options=types.HttpOptions(base_url=capture.url, api_version="v1")))
    case = request("google/veo-3.1-generate-001", size="1920x1080", seconds=8, audio=True)
    ours = use(GoogleProvider, tmp_path, lambda p: asyncio.sleep(0, p.body(case)))
    params = ours["parameters"]
    operation = sdk.models.generate_videos(
        model=case.wire_model, source=types.GenerateVideosSource(prompt=case.prompt),
        config=types.GenerateVideosConfig(
            number_of_videos=params["sampleCount"], duration_seconds=params["durationSeconds"],
            aspect_ratio=params["aspectRatio"], resolution=params["resolution"],
            generate_audio=params["generateAudio"], seed=params["seed"]))
    theirs = only(capture, "POST")
    ref = use(GoogleProvider, tmp_path, lambda p: p.submit(case))
    mine = only(capture, "POST")
    assert (mine.path, mine.json()) == (theirs.path, theirs.json())
    assert mine.headers["authorization"] == theirs.headers["authorization"]
    assert operation.name == ref.data["operation"] == name
    # The cast's pictures: the same referenceImages as the SDK's asset reference images.
    pictures = (image_input(b"\x89PNG maya", name="Maya"), image_input(b"\x89PNG leo", name="Leo"))
    cast = dataclasses.replace(case, references=pictures)
    sdk.models.generate_videos(
        model=case.wire_model, source=types.GenerateVideosSource(prompt=case.prompt),
        config=types.GenerateVideosConfig(
            number_of_videos=params["sampleCount"], duration_seconds=params["durationSeconds"],
            aspect_ratio=params["aspectRatio"], resolution=params["resolution"],
            generate_audio=params["generateAudio"], seed=params["seed"],
            reference_images=[types.VideoGenerationReferenceImage(
                image=types.Image(image_bytes=p.data, mime_type=p.mime),
                reference_type=types.VideoGenerationReferenceType.ASSET) for p in pictures]))
    theirs = only(capture, "POST")
    use(GoogleProvider, tmp_path, lambda p: p.submit(cast))
    mine = only(capture, "POST")
    assert mine.json() == theirs.json()
    assert len(mine.json()["instances"][0]["referenceImages"]) == 2

    # Polling: the SDK's operations.get and ours send the same fetchPredictOperation.
    fetch = re.escape(model_path) + ":fetchPredictOperation"
    outcomes: dict[str, tuple[dict[str, Any], str]] = {
        "running": ({"name": name, "done": False}, "running"),
        "video": ({"name": name, "done": True, "response": {
            "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
            "videos": [{"bytesBase64Encoded": base64.b64encode(CLIP).decode(),
                        "mimeType": "video/mp4"}]}}, "succeeded"),
        "filtered": ({"name": name, "done": True, "response": {
            "raiMediaFilteredCount": 1,
            "raiMediaFilteredReasons": ["The prompt violates our usage guidelines."]}}, "failed"),
        "error": ({"name": name, "done": True,
                   "error": {"code": 13, "message": "Internal error"}}, "failed"),
    }
    for word, (body, state) in outcomes.items():
        answer(capture, "POST", fetch, body)
        parsed = sdk.operations.get(operation)  # what the SDK makes of the same answer
        theirs = only(capture, "POST")
        assert polled(GoogleProvider, tmp_path, ref).state == state, word
        mine = only(capture, "POST")
        assert (mine.path, mine.json()) == (theirs.path, theirs.json())
        assert bool(parsed.done) == body["done"]
        if word == "video":
            assert parsed.response and parsed.response.generated_videos
            assert parsed.response.generated_videos[0].video.video_bytes == CLIP
            dest = use(GoogleProvider, tmp_path, lambda p: p.download(ref, tmp_path / "g.mp4"))
            assert dest.read_bytes() == CLIP
            capture.requests.clear()
        if word == "filtered":
            assert parsed.response and parsed.response.rai_media_filtered_count == 1
        if word == "error":
            assert parsed.error and parsed.error["code"] == 13


# ---------------------------------------------------------------------------------- xAI


def test_xai_bodies_fit_the_sdks_request_message_and_every_deferred_status_is_read(
        tmp_path: Path, capture: VendorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """xai-sdk speaks gRPC, so it cannot be pointed at a capture server. What is checked:
    each field of our REST body exists in the SDK's GenerateVideoRequest, its values go
    through the SDK's own request builder (ratio and resolution words included), and the
    SDK's DeferredStatus words and VideoResponse fields, as JSON, are read by the adapter.
    Not checked: REST-only spellings the proto cannot show, e.g. ``image: {"url"}`` (the
    proto's ImageUrlContent calls it ``image_url``)."""
    from google.protobuf import json_format
    from xai_sdk import video as xai_video
    from xai_sdk.proto.v6 import deferred_pb2, video_pb2

    from shotline.providers.xai import XaiProvider

    monkeypatch.setenv("XAI_API_KEY", KEY)
    monkeypatch.setenv("SHOTLINE_XAI_BASE_URL", capture.url)
    fields = {f.name for f in video_pb2.GenerateVideoRequest.DESCRIPTOR.fields}
    for case in (request("xai/grok-imagine-video", size="1280x720", seconds=6),
                 request("xai/grok-imagine-video-1.5", size="1080x1920", audio=True),
                 request("xai/grok-imagine-video-1.5-lite", size="480x480")):
        body = use(XaiProvider, tmp_path, lambda p, c=case: asyncio.sleep(0, p.body(c)))
        assert set(body) <= fields, set(body) - fields
        built = xai_video._make_generate_request(
            body["prompt"], body["model"], image_url=None, video_url=None,
            duration=body["duration"], aspect_ratio=body["aspect_ratio"],
            resolution=body["resolution"], reference_image_urls=None,
            generate_audio=body["generate_audio"])
        assert built.HasField("generate_audio") and built.generate_audio is case.audio
        assert video_pb2.VideoAspectRatio.Name(built.aspect_ratio).endswith(
            body["aspect_ratio"].replace(":", "_"))
        assert video_pb2.VideoResolution.Name(built.resolution).lower().endswith(
            body["resolution"])

    url = serve_file(capture)
    words = [w for w in deferred_pb2.DeferredStatus.keys() if w != "INVALID_DEFERRED_STATUS"]
    assert set(words) == {"DONE", "EXPIRED", "PENDING", "FAILED"}
    expected = {"DONE": "succeeded", "EXPIRED": "failed", "PENDING": "running",
                "FAILED": "failed"}
    ref = JobRef("xai", "req-1")
    for word in words:
        response = video_pb2.VideoResponse(model="grok-imagine-video", progress=40)
        if word == "DONE":
            response.video.CopyFrom(video_pb2.GeneratedVideo(url=url, duration=6,
                                                             respect_moderation=True))
        if word == "FAILED":
            response.error.CopyFrom(video_pb2.VideoError(code="internal",
                                                         message="generation failed"))
        deferred = video_pb2.GetDeferredVideoResponse(
            status=deferred_pb2.DeferredStatus.Value(word), response=response)
        wire = json_format.MessageToDict(deferred, preserving_proto_field_name=True)
        # REST flattens the deferred wrapper and spells the status in lower case.
        rest = {**wire["response"], "status": wire["status"].lower()}
        answer(capture, "GET", r"/v1/videos/req-1", rest)
        status = polled(XaiProvider, tmp_path, ref)
        assert status.state == expected[word], word
    answer(capture, "GET", r"/v1/videos/req-1", {"status": "done", "video": {
        "url": url, "duration": 6, "respect_moderation": True}})
    dest = use(XaiProvider, tmp_path, lambda p: p.download(ref, tmp_path / "x.mp4"))
    assert dest.read_bytes() == CLIP
