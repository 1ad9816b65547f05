"""The ``fal`` adapter: fal.ai's queue API (Kling, Seedance, Wan, Hailuo, Veo 3 Fast, Luma).

Wire format (``Authorization: Key $FAL_KEY``, not Bearer):

* ``POST https://queue.fal.run/{endpoint_id}`` with the model's input as the whole JSON
  body answers ``{request_id, status_url, response_url, cancel_url}`` at once.
* The returned URLs drop the model's sub-path (``fal-ai/kling-video/requests/{id}/...``
  for a submit to ``fal-ai/kling-video/v2.6/pro/text-to-video``), so they are kept in the
  ``JobRef`` and used as given; they are never rebuilt from the endpoint id.
* ``GET {status_url}?logs=0``: ``IN_QUEUE`` (with ``queue_position``; fal queues over the
  account's concurrency limit instead of refusing, so this is backpressure, not an error),
  ``IN_PROGRESS``, ``COMPLETED``. A failed run is also ``COMPLETED``, carrying ``error``
  and ``error_type``; its result answers 422 with ``{"detail": [{"msg", "type"}]}``.
* ``GET {response_url}`` gives ``{"video": {"url": ...}}`` on fal's CDN; ``PUT {cancel_url}``.

Lookup (:meth:`find`): fal's platform API, ``GET https://api.fal.ai/v1/models/requests/
by-endpoint?endpoint_id=...&start=...&expand=payloads`` (override the host with
``SHOTLINE_FAL_API_URL``), lists an endpoint's requests since a time with their
``json_input``; a request made from exactly our input is ours, and its queue URLs are
rebuilt from its id as fal's own client does. fal documents the list as request
*history*, so a request still queued may not be in it yet: then the answer is "cannot
tell yet" (the shot waits for an operator or the next run) until the render deadline has
passed since the submit, after which an unlisted request is taken as never made.

Each model family spells its input differently (``duration`` is the string ``"5"`` on
Kling, ``"8s"`` on Veo 3 Fast and Luma); see the family functions. fal does not bill
5xx answers, but may bill a 422, so a bad request is refused here before any call.

Images go inline as data URIs in fal's ``*_url`` fields (fal reads those as it reads URLs),
to a sibling endpoint of the text route (see :meth:`FalProvider.endpoint`):

* Kling 2.6 and 3.0: ``.../image-to-video`` with ``start_image_url`` and ``end_image_url``
  (the image sets the shape, so no ``aspect_ratio``); 3.0 also takes the cast as
  ``elements``, one per member, ``{frontal_image_url, reference_image_urls}`` (a first
  picture and 1-3 more views; a member with one picture gives it as both), cited in the
  prompt as ``@Element1``... Kling 3.0 takes elements only beside a first frame.
* Kling O3: ``.../image-to-video`` with ``image_url``/``end_image_url`` for frames alone;
  ``.../reference-to-video`` with ``elements`` (and ``start_image_url``/``end_image_url``)
  when the cast has pictures.
* Seedance 2.0: ``.../image-to-video`` with ``image_url``/``end_image_url``, or
  ``.../reference-to-video`` with ``image_urls``, cited as ``@Image1``..., never both.
* Kling and Seedance refuse pictures under 300 px a side or outside 2:5..5:2; so does this
  adapter, before any call. Other families take no images here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx

from ..core.capabilities import Capabilities, tier_of
from ..errors import AmbiguousSubmitError, CapabilityError, PermanentError
from ..settings import Settings
from .base import ImageInput, JobRef, JobStatus, ShotRequest
from .http import CLOCK_SLACK, HttpProvider, add_seed, aspect_ratio, check

# fal's error_type values that a second run can cure; content policy and input errors cannot.
LIST_PAGES = 10  # find() reads at most this many pages of the request history
TRANSIENT_ERRORS = ("internal_server_error", "generation_timeout", "downstream_service_error",
                    "downstream_service_unavailable", "runner_disconnected", "timeout")
IMAGE_RULES: dict[str, Any] = {"min_side": 300, "ratio": (0.4, 2.5)}  # Kling and Seedance


def _route(r: ShotRequest) -> str:
    """Which of a model's endpoints a request goes to: text, image or reference."""
    if r.references and ("/o3/" in r.wire_model or "seedance" in r.wire_model):
        return "reference-to-video"
    return "image-to-video" if r.first_frame or r.last_frame or r.references else "text-to-video"


def _elements(r: ShotRequest) -> tuple[list[dict[str, Any]], str]:
    """Kling's ``elements``, one per member, and the prompt that cites them."""
    members: dict[str, list[ImageInput]] = {}
    for ref in r.references:
        members.setdefault(ref.name, []).append(ref)
    elements = [{"frontal_image_url": pics[0].data_uri(),
                 "reference_image_urls": [p.data_uri() for p in pics[1:4] or pics[:1]]}
                for pics in members.values()]
    cites = " ".join(f"@Element{n} is {name}." for n, name in enumerate(members, 1))
    return elements, f"{r.prompt} {cites}".strip()


def _kling(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": r.prompt, "duration": str(r.seconds)}
    route = _route(r)
    if route == "text-to-video" or route == "reference-to-video":
        body["aspect_ratio"] = aspect_ratio(r.size)  # else the first frame sets the shape
    if c.audio == "optional":  # Kling 4 always renders sound and has no switch
        body["generate_audio"] = r.audio
    o3 = "/o3/" in r.wire_model
    first = "image_url" if o3 and route == "image-to-video" else "start_image_url"
    if r.first_frame:
        body[first] = r.first_frame.data_uri()
    if r.last_frame:
        body["end_image_url"] = r.last_frame.data_uri()
    if r.references:
        body["elements"], body["prompt"] = _elements(r)
    return body


def _seedance(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": r.prompt, "duration": str(r.seconds),
                            "resolution": tier_of(r.size), "generate_audio": r.audio}
    if _route(r) != "image-to-video":
        body["aspect_ratio"] = aspect_ratio(r.size)  # else the first frame sets the shape
    if r.first_frame:
        body["image_url"] = r.first_frame.data_uri()
    if r.last_frame:
        body["end_image_url"] = r.last_frame.data_uri()
    if r.references:
        body["image_urls"] = [ref.data_uri() for ref in r.references]
        cites = " ".join(f"@Image{n} shows {ref.name}." for n, ref in enumerate(r.references, 1))
        body["prompt"] = f"{r.prompt} {cites}"
    return body


def _wan(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    # No documented audio switch on the text route (audio_url is a soundtrack *input*).
    return {"prompt": r.prompt, "duration": str(r.seconds), "resolution": tier_of(r.size),
            "aspect_ratio": aspect_ratio(r.size)}


def _wan27(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    # 2.7 takes an integer duration (a string is refused) and rewrites prompts unless told not.
    return {"prompt": r.prompt, "duration": r.seconds, "resolution": tier_of(r.size),
            "aspect_ratio": aspect_ratio(r.size), "enable_prompt_expansion": False}


def _hailuo(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": r.prompt, "prompt_optimizer": False}  # send the words as written
    if len(c.durations) > 1:  # Pro has a fixed length and no duration field
        body["duration"] = str(r.seconds)
    return body


def _veo3_fast(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    return {"prompt": r.prompt, "duration": f"{r.seconds}s", "aspect_ratio": aspect_ratio(r.size),
            "resolution": tier_of(r.size), "generate_audio": r.audio}


def _luma(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    return {"prompt": r.prompt, "duration": f"{r.seconds}s", "aspect_ratio": aspect_ratio(r.size),
            "resolution": tier_of(r.size)}


Mapper = Callable[[ShotRequest, Capabilities], dict[str, Any]]
FAMILIES: tuple[tuple[str, Mapper], ...] = (
    ("kling", _kling), ("seedance", _seedance), ("wan/v2.7", _wan27), ("wan", _wan),
    ("hailuo", _hailuo),
    ("veo3", _veo3_fast), ("luma/", _luma),
)
# Endpoints whose image routes this adapter calls (Kling 4's are not known well enough).
IMAGE_FAMILIES = ("kling-video/v2.6", "kling-video/v3", "kling-video/o3", "seedance-2.0")


class FalProvider(HttpProvider):
    """fal.ai queue adapter; see the module docstring for the wire format."""

    name: ClassVar[str] = "fal"
    key_env: ClassVar[tuple[str, ...]] = ("FAL_KEY",)
    default_base_url: ClassVar[str] = "https://queue.fal.run"

    finds_jobs: ClassVar[bool] = True
    lookup: ClassVar[str] = ("the platform API's request history for the endpoint, matched on "
                             "the exact input and the time of the submit")

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        super().__init__(settings, transport)
        self.platform_url = os.environ.get("SHOTLINE_FAL_API_URL",
                                           "https://api.fal.ai/v1").rstrip("/")

    def _own_host(self, url: str) -> bool:
        # The key belongs to the queue and the platform API, never to the file CDN.
        return super()._own_host(url) or self._same_origin(httpx.URL(url),
                                                          httpx.URL(self.platform_url))

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.api_key()}"}

    def validate(self, request: ShotRequest) -> None:
        """Refuse what the model cannot do (the core calls this before it writes anything)."""
        self._mapping(request)

    def _mapping(self, request: ShotRequest) -> tuple[Capabilities, Mapper]:
        caps = self.capabilities(request)
        images = any(word in request.wire_model for word in IMAGE_FAMILIES)
        check(request, caps, images=images)
        mapper = next((fn for word, fn in FAMILIES if word in request.wire_model), None)
        if mapper is None:
            raise CapabilityError(f"{request.model}: no input mapping for fal endpoint "
                                  f"{request.wire_model!r}")
        if request.last_frame and not request.first_frame:
            raise CapabilityError(f"{request.model}: on fal a last frame needs a first frame "
                                  "too; nothing was sent")
        for image in request.images():
            image.require(request.model, **IMAGE_RULES)
        return caps, mapper

    def endpoint(self, request: ShotRequest) -> str:
        """The endpoint id ``request`` is posted to: the model's text route, or a sibling."""
        route = _route(request)
        base = request.wire_model.strip("/")
        if route == "text-to-video" or not base.endswith("/text-to-video"):
            return base
        return base.removesuffix("text-to-video") + route

    def body(self, request: ShotRequest) -> dict[str, Any]:
        """fal's input for ``request``, or CapabilityError if the model cannot do it."""
        caps, mapper = self._mapping(request)
        return add_seed(mapper(request, caps), caps, request)

    async def submit(self, request: ShotRequest) -> JobRef:
        body = self.body(request)
        answer = await self.call("POST", f"/{self.endpoint(request)}", body=body, submit=True)
        try:
            urls = {k: str(answer[k]) for k in ("status_url", "response_url", "cancel_url")}
            return JobRef(self.name, str(answer["request_id"]), urls)
        except (KeyError, TypeError):
            # The job may exist but cannot be followed; say so rather than submit again.
            raise PermanentError(f"fal accepted the submit but its answer lacks the job URLs: "
                                 f"{self._scrub(str(answer))[:300]}", reason="bad submit answer"
                                 ) from None

    async def poll(self, ref: JobRef) -> JobStatus:
        url = ref.data["status_url"]
        answer = await self.call("GET", url + ("&" if "?" in url else "?") + "logs=0")
        status = answer.get("status")
        step = self.settings.poll_interval
        if status == "IN_QUEUE":
            position = answer.get("queue_position") or 0
            return JobStatus("queued", next_poll=step * min(1 + int(position), 6))
        if status == "IN_PROGRESS":
            return JobStatus("running", next_poll=step)
        if status == "COMPLETED":
            if error := answer.get("error"):
                kind = str(answer.get("error_type") or "")
                said = self._scrub(error if isinstance(error, str) else str(error))
                retryable = kind in TRANSIENT_ERRORS or (not kind and not self.is_moderation(said))
                return JobStatus("failed", error=f"{said} ({kind})" if kind else said,
                                 retryable=retryable)
            return JobStatus("succeeded", progress=1.0)
        return JobStatus("running", next_poll=step)  # an unknown state: keep watching

    async def download(self, ref: JobRef, dest: Path) -> Path:
        result = await self.call("GET", ref.data["response_url"])
        video = result.get("video") if isinstance(result, dict) else None
        if not isinstance(video, dict) or not video.get("url"):
            raise PermanentError(f"fal job {ref.job_id} finished without a video URL",
                                 reason="no video in the result")
        return await self.fetch(str(video["url"]), dest)

    async def find(self, request: ShotRequest, since: float) -> JobRef | None:
        """The request made from exactly this input at or after ``since``, if fal lists it."""
        wanted = self.body(request)
        endpoint = self.endpoint(request)
        start = datetime.fromtimestamp(since - CLOCK_SLACK, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params: dict[str, Any] = {"endpoint_id": endpoint, "start": start,
                                  "expand": "payloads", "limit": 100}
        for _ in range(LIST_PAGES):
            page = await self.call("GET", f"{self.platform_url}/models/requests/by-endpoint",
                                   params=params)
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise PermanentError("fal: the request history has no 'items'",
                                     reason="bad list answer")
            for item in items:
                if item.get("json_input") == wanted and item.get("request_id"):
                    return JobRef(self.name, str(item["request_id"]),
                                  self._urls(endpoint, str(item["request_id"])))
            if not (page.get("has_more") and page.get("next_cursor")):
                break
            params["cursor"] = page["next_cursor"]
        else:
            raise PermanentError("fal: too many requests since the submit to look through",
                                 reason="lookup window too large")
        if time.time() - since > self.settings.render_deadline:
            return None  # long enough for any request fal accepted to be in its history
        raise AmbiguousSubmitError("fal: no request with this input is in the history yet; a "
                                   "queued one may not be listed until it ends",
                                   reason="not listed yet")

    def _urls(self, endpoint: str, request_id: str) -> dict[str, str]:
        # fal's client builds these from the app's owner/alias, dropping the sub-path.
        base = f"{self.base_url}/{'/'.join(endpoint.split('/')[:2])}/requests/{request_id}"
        return {"status_url": f"{base}/status", "response_url": base,
                "cancel_url": f"{base}/cancel"}

    async def cancel(self, ref: JobRef) -> bool:
        try:
            await self.call("PUT", ref.data["cancel_url"])
        except PermanentError:  # 400 "already completed": nothing left to stop
            return False
        return True
