"""The ``luma`` provider: Ray 3.2 on the Agents API, Ray 2 / Ray Flash 2 on Dream Machine.

Luma serves its models from two APIs on two hosts:

* ``ray-3.2`` uses the Agents API, base ``https://agents.lumalabs.ai/v1`` (override with
  ``SHOTLINE_LUMA_BASE_URL``): ``POST /generations`` with ``{"model", "type": "video",
  "prompt", "aspect_ratio", "video": {"resolution", "duration"}}``.
* ``ray-2`` and ``ray-flash-2`` use the legacy Dream Machine API, base
  ``https://api.lumalabs.ai/dream-machine/v1`` (override with
  ``SHOTLINE_LUMA_LEGACY_BASE_URL``): ``POST /generations`` with flat ``model``,
  ``prompt``, ``aspect_ratio``, ``resolution`` and ``duration``.

Both take the key as ``Authorization: Bearer $LUMAAI_API_KEY``, sent to either API host
but never to the file CDN. Quirks that matter:

* ``duration`` is a string, ``"5s"``/``"10s"`` (Ray 3.2) or ``"5s"``/``"9s"`` (Ray 2);
  ``resolution`` is a tier (``"540p"``, ``"720p"``, ``"1080p"``) and ``aspect_ratio`` one
  of seven named ratios (1680x720 is ``"21:9"``): there is no pixel size field.
* ``GET /generations/{id}`` answers ``state`` ``queued`` -> ``dreaming`` -> ``completed``
  (``assets.video`` is the file URL) or ``failed`` (``failure_reason``). The Agents API's
  status fields were not published where we could read them; the legacy shape is assumed
  and ``status`` / ``output`` spellings are accepted too.
* No seed, no audio switch, no idempotency key and no lookup by client key: a submit
  whose answer was lost is not resubmitted by the core. Keyframes need hosted image URLs,
  which this adapter does not upload, so frames are refused before any call.
* The JobRef keeps which API made the job, so a restarted worker polls the right host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from ..capabilities import tier_of
from ..errors import PermanentError
from ..settings import Settings
from .base import JobRef, JobStatus, ShotRequest
from .http import HttpProvider, aspect_ratio, check

LEGACY_ENV = "SHOTLINE_LUMA_LEGACY_BASE_URL"
LEGACY_DEFAULT = "https://api.lumalabs.ai/dream-machine/v1"
AGENTS_MODELS = frozenset({"ray-3.2"})


class LumaProvider(HttpProvider):
    """Luma's two generation APIs; see the module docstring for the vendor's quirks."""

    name: ClassVar[str] = "luma"
    key_env: ClassVar[tuple[str, ...]] = ("LUMAAI_API_KEY",)
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
        check(request, caps)  # frames refused: Luma wants hosted URLs we do not upload
        common = {"model": request.wire_model, "prompt": request.prompt,
                  "aspect_ratio": aspect_ratio(request.size)}
        video = {"resolution": tier_of(request.size), "duration": f"{int(request.seconds)}s"}
        if request.wire_model in AGENTS_MODELS:
            return "agents", {**common, "type": "video", "video": video}
        return "legacy", {**common, **video}

    async def submit(self, request: ShotRequest) -> JobRef:
        api, body = self.route(request)
        answer = await self.call("POST", f"{self._base(api)}/generations", submit=True, body=body)
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
        assets = job.get("assets") or job.get("output") or {}
        url = assets.get("video") if isinstance(assets, dict) else None
        if isinstance(url, dict):  # tolerate {"video": {"url": ...}}
            url = url.get("url")
        return str(url) if url else None

    async def poll(self, ref: JobRef) -> JobStatus:
        job = await self._generation(ref)
        state = self._state(job)
        if state in ("queued", "pending"):
            return JobStatus("queued")
        if state == "completed":
            return JobStatus("succeeded", progress=1.0)
        if state == "failed":
            said = self._scrub(str(job.get("failure_reason") or "the generation failed"))
            moderated = self.is_moderation(said)
            # Luma does not bill failed generations, so a non-moderation failure may retry.
            return JobStatus("failed", error=f"{'moderation: ' if moderated else ''}luma: {said}",
                             retryable=not moderated)
        return JobStatus("running")  # "dreaming", or a state we do not know: keep polling

    async def download(self, ref: JobRef, dest: Path) -> Path:
        # A fresh read: the presigned URL is not stored in the JobRef, and it expires.
        job = await self._generation(ref)
        url = self._video_url(job)
        if self._state(job) != "completed" or not url:
            raise PermanentError(f"luma: generation {ref.job_id} has no video URL "
                                 f"(state {self._state(job)!r})", reason="no video URL")
        return await self.fetch(url, dest)

    async def cancel(self, ref: JobRef) -> bool:
        if ref.data.get("api") != "legacy":  # only the legacy API documents DELETE
            return False
        await self.call("DELETE", f"{self.legacy_url}/generations/{ref.job_id}")
        return True
