"""The ``luma`` provider: Ray 3.2 on the Agents API, Ray 2 / Ray Flash 2 on Dream Machine.

Luma serves its models from two APIs on two hosts (shapes checked against the official
SDKs, ``luma-agents`` 0.5 and ``lumaai`` 1.21):

* ``ray-3.2`` uses the Agents API, base ``https://agents.lumalabs.ai/v1`` (override with
  ``SHOTLINE_LUMA_BASE_URL``): ``POST /generations`` with ``{"model", "type": "video",
  "prompt", "aspect_ratio", "video": {"resolution", "duration", "start_frame",
  "end_frame"}}``. Frames go inline as ``{"data": <base64>, "media_type"}``. A generation
  answers ``state`` ``queued | processing | completed | failed``; a finished one lists its
  files in ``output``, a list of ``{"type": "video", "url"}`` items (URLs last an hour);
  a failed one has ``failure_code`` (``content_moderated``, ``generation_failed``, ...)
  and ``failure_reason``. There is no list endpoint and no idempotency key.
* ``ray-2`` and ``ray-flash-2`` use the legacy Dream Machine API, base
  ``https://api.lumalabs.ai/dream-machine/v1`` (override with
  ``SHOTLINE_LUMA_LEGACY_BASE_URL``): ``POST /generations/video`` with flat ``model``,
  ``prompt``, ``aspect_ratio``, ``resolution`` and ``duration``. A generation answers
  ``state`` ``queued | dreaming | completed | failed`` with the file in ``assets.video``.
  ``GET /generations?limit&offset`` lists recent generations, newest first, each with
  ``created_at`` and the ``request`` it was made from: that is how :meth:`find` looks up a
  generation whose submit answer was lost.

Both take the key as ``Authorization: Bearer $LUMAAI_API_KEY`` (or
``$LUMA_AGENTS_API_KEY``, the Agents SDK's name for it), sent to either API host but never
to the file CDN. Quirks that matter:

* ``duration`` is a string, ``"5s"``/``"10s"`` (Ray 3.2) or ``"5s"``/``"9s"`` (Ray 2);
  ``resolution`` is a tier (``"540p"``, ``"720p"``, ``"1080p"``) and ``aspect_ratio`` one
  of the named ratios (1680x720 is ``"21:9"``): there is no pixel size field.
* No seed and no audio switch. Ray 3.2 takes start/end frames only for 5 s clips; the
  legacy API wants hosted image URLs, which this adapter does not upload, so frames are
  refused there before any call.
* The JobRef keeps which API made the job, so a restarted worker polls the right host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from ..core.capabilities import tier_of
from ..errors import AmbiguousSubmitError, CapabilityError, PermanentError
from ..settings import Settings
from .base import ImageInput, JobRef, JobStatus, ShotRequest
from .http import CLOCK_SLACK, HttpProvider, aspect_ratio, check, parse_time

LEGACY_ENV = "SHOTLINE_LUMA_LEGACY_BASE_URL"
LEGACY_DEFAULT = "https://api.lumalabs.ai/dream-machine/v1"
AGENTS_MODELS = frozenset({"ray-3.2"})
AGENTS_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "3:4", "2:3", "9:16")
# failure_code values of the Agents API that the same request would meet again.
FINAL_CODES = ("content_moderated", "invalid_request", "image_too_large", "unsupported_format",
               "corrupt_input", "budget_exhausted")
LIST_PAGE, LIST_PAGES = 100, 5  # find() reads at most this many recent generations


def _frame(image: ImageInput) -> dict[str, str]:
    return {"data": image.base64(), "media_type": image.mime}


class LumaProvider(HttpProvider):
    """Luma's two generation APIs; see the module docstring for the vendor's quirks."""

    name: ClassVar[str] = "luma"
    key_env: ClassVar[tuple[str, ...]] = ("LUMAAI_API_KEY", "LUMA_AGENTS_API_KEY")
    finds_jobs: ClassVar[bool] = True
    lookup: ClassVar[str] = (
        "Dream Machine models (ray-2, ray-flash-2): the list of recent generations, matched "
        "on the request and its time; the Agents API (ray-3.2) has no list: check the Luma "
        "dashboard for a generation made from the shot's prompt")
    default_base_url: ClassVar[str] = "https://agents.lumalabs.ai/v1"

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        super().__init__(settings, transport)
        self.legacy_url = os.environ.get(LEGACY_ENV, LEGACY_DEFAULT).rstrip("/")

    def _own_host(self, url: str) -> bool:
        # The key belongs to both API hosts; anything else (the CDN) must not see it.
        return super()._own_host(url) or urlsplit(url).netloc == urlsplit(self.legacy_url).netloc

    def _base(self, api: str) -> str:
        return self.base_url if api == "agents" else self.legacy_url

    def validate(self, request: ShotRequest) -> None:
        """Refuse what the model cannot do (the core calls this before it writes anything)."""
        self.route(request)

    def route(self, request: ShotRequest) -> tuple[str, dict[str, Any]]:
        """Which API (``agents`` or ``legacy``) and the JSON body, or CapabilityError."""
        caps = self.capabilities(request)
        agents = request.wire_model in AGENTS_MODELS
        check(request, caps, images=agents)  # legacy frames need hosted URLs: refused
        framed = request.first_frame is not None or request.last_frame is not None
        if agents and framed and request.seconds > 5:
            raise CapabilityError(f"{request.model}: start/end frames need a 5 s clip (10 s "
                                  "is text-only); nothing was sent")
        common = {"model": request.wire_model, "prompt": request.prompt,
                  "aspect_ratio": aspect_ratio(request.size, AGENTS_RATIOS if agents else
                                               ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9",
                                                "9:21"))}
        video: dict[str, Any] = {"resolution": tier_of(request.size),
                                 "duration": f"{int(request.seconds)}s"}
        if not agents:
            return "legacy", {**common, **video}
        for field, frame in (("start_frame", request.first_frame),
                             ("end_frame", request.last_frame)):
            if frame is not None:
                video[field] = _frame(frame)
        return "agents", {**common, "type": "video", "video": video}

    def _path(self, api: str) -> str:
        # The Dream Machine SDK creates videos at /generations/video; the Agents API at
        # /generations, with the kind in the body.
        return f"{self._base(api)}/generations" + ("" if api == "agents" else "/video")

    async def submit(self, request: ShotRequest) -> JobRef:
        api, body = self.route(request)
        answer = await self.call("POST", self._path(api), submit=True, body=body)
        job_id = answer.get("id") if isinstance(answer, dict) else None
        if not job_id:
            # Accepted but unnamed: a generation may exist, so never resubmit it blindly.
            raise PermanentError("luma accepted the submit but its answer has no id",
                                 reason="submit answer without id")
        return JobRef(self.name, str(job_id), {"api": api})

    async def _generation(self, ref: JobRef) -> dict[str, Any]:
        base = self._base(str(ref.data.get("api", "agents")))
        job = await self.call("GET", f"{base}/generations/{ref.job_id}")
        return job if isinstance(job, dict) else {}

    @staticmethod
    def _state(job: dict[str, Any]) -> str:
        return str(job.get("state") or job.get("status") or "").lower()

    @staticmethod
    def _video_url(job: dict[str, Any]) -> str | None:
        output = job.get("output")
        if isinstance(output, list):  # Agents API: [{"type": "video", "url": ...}, ...]
            urls = [o.get("url") for o in output if isinstance(o, dict) and o.get("url")
                    and o.get("type") in ("video", None)]
            return str(urls[0]) if urls else None
        assets = job.get("assets")  # Dream Machine: {"video": url, "image": ...}
        url = assets.get("video") if isinstance(assets, dict) else None
        return str(url) if url else None

    async def poll(self, ref: JobRef) -> JobStatus:
        job = await self._generation(ref)
        state = self._state(job)
        if state == "queued":
            return JobStatus("queued")
        if state == "completed":
            return JobStatus("succeeded", progress=1.0)
        if state == "failed":
            code = str(job.get("failure_code") or "")
            said = self._scrub(str(job.get("failure_reason") or code or "the generation failed"))
            moderated = code == "content_moderated" or self.is_moderation(said)
            # Luma does not bill failed generations, so a transient failure may retry.
            return JobStatus("failed", error=f"{'moderation: ' if moderated else ''}luma: {said}"
                             + (f" ({code})" if code else ""),
                             retryable=not moderated and code not in FINAL_CODES)
        # "dreaming", "processing", or a state we do not know: keep polling.
        return JobStatus("running")

    async def download(self, ref: JobRef, dest: Path) -> Path:
        # A fresh read: the presigned URL is not stored in the JobRef, and it expires.
        job = await self._generation(ref)
        url = self._video_url(job)
        if self._state(job) != "completed" or not url:
            raise PermanentError(f"luma: generation {ref.job_id} has no video URL "
                                 f"(state {self._state(job)!r})", reason="no video URL")
        return await self.fetch(url, dest)

    async def find(self, request: ShotRequest, since: float) -> JobRef | None:
        """A legacy generation made from exactly this request at or after ``since``."""
        api, body = self.route(request)
        if api != "legacy":
            raise AmbiguousSubmitError(
                "luma: the Agents API (ray-3.2) has no list of generations to look in; check "
                "the Luma dashboard for a generation made from the shot's prompt",
                reason="no lookup")
        wanted = {k: body[k] for k in ("model", "prompt", "aspect_ratio", "resolution",
                                       "duration")}
        for page in range(LIST_PAGES):
            answer = await self.call("GET", f"{self.legacy_url}/generations",
                                     params={"limit": LIST_PAGE, "offset": page * LIST_PAGE})
            jobs = answer.get("generations") if isinstance(answer, dict) else None
            if not isinstance(jobs, list):
                raise PermanentError("luma: the generation list has no 'generations'",
                                     reason="bad list answer")
            for job in jobs:
                created = parse_time(job.get("created_at"))
                if created is not None and created < since - CLOCK_SLACK:
                    return None  # newest first: everything further is older still
                made = job.get("request") if isinstance(job.get("request"), dict) else {}
                if all(made.get(k) == v for k, v in wanted.items()) and job.get("id"):
                    return JobRef(self.name, str(job["id"]), {"api": "legacy"})
            if len(jobs) < LIST_PAGE:
                return None
        raise PermanentError(f"luma: more than {LIST_PAGE * LIST_PAGES} generations since "
                             "the submit; cannot tell", reason="lookup window too large")

    async def cancel(self, ref: JobRef) -> bool:
        if ref.data.get("api") != "legacy":  # only the legacy API documents DELETE
            return False
        await self.call("DELETE", f"{self.legacy_url}/generations/{ref.job_id}")
        return True
