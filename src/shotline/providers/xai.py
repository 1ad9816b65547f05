"""The ``xai`` provider: Grok Imagine video through ``api.x.ai``.

Wire format (docs.x.ai video generation guide, as mirrored by third parties):

* ``POST /v1/videos/generations`` with ``model``, ``prompt``, ``duration`` (an integer of
  seconds, 1-15), ``resolution`` (``"480p"``, ``"720p"``, ``"1080p"`` on 1.5) and
  ``aspect_ratio`` (``"16:9"``, ``"9:16"``, ``"1:1"``, ...). The vendor picks the pixels:
  there is no WxH field, so a size maps to a tier plus a ratio. It answers
  ``{"request_id": ...}`` at once.
* ``GET /v1/videos/{request_id}`` answers ``status`` ``"pending"`` until ``"done"`` (with
  ``video.url``, ``video.duration``, ``video.respect_moderation``) or ``"expired"`` (the
  request aged out at xAI: there is nothing to fetch and polling longer cannot help).
* ``generate_audio`` (a bool, default true at xAI) is always sent, so a silent shot asks
  for no audio track instead of getting one (the price is the same either way). No seed is
  documented: one is sent only if the capability table says ``seed = true``.
* A prompt refused by moderation answers 4xx; a clip that fails output moderation comes
  back ``done`` with ``respect_moderation: false``. xAI bills moderation blocks (the
  table's ``billed_on_failure``), so neither is ever retried.
* Video URLs are temporary and live on a CDN host, so they are fetched at once, and
  without our key (``fetch`` sends it only to the API's own host).
* There is no idempotency key and no lookup by client key: a lost submit answer cannot
  be reconciled, so this adapter has no ``find`` and the core will not resubmit it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..core.capabilities import tier_of
from ..errors import PermanentError
from .base import JobRef, JobStatus, ShotRequest
from .http import HttpProvider, add_seed, aspect_ratio, check

# The ratios the API names; a size maps to the nearest one (854x480 is "16:9").
RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3")


def _video(job: dict[str, Any]) -> dict[str, Any]:
    video = job.get("video")
    return video if isinstance(video, dict) else {}


class XaiProvider(HttpProvider):
    """Grok Imagine video; see the module docstring for the vendor's quirks."""

    name: ClassVar[str] = "xai"
    key_env: ClassVar[tuple[str, ...]] = ("XAI_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.x.ai"
    lookup: ClassVar[str] = (
        "xAI has no list of video requests and no idempotency key: check the usage page of the "
        "xAI console for a video request made after the submit")


    def validate(self, request: ShotRequest) -> None:
        """Refuse what the model cannot do (the core calls this before it writes anything)."""
        self.body(request)

    def body(self, request: ShotRequest) -> dict[str, Any]:
        caps = self.capabilities(request)
        check(request, caps, images=True)
        if request.last_frame:  # the 1.5 field for it is not documented: refuse, don't guess
            raise PermanentError("xai: last-frame input is not supported by this adapter",
                                 reason="validation: last frame not supported")
        body: dict[str, Any] = {
            "model": request.wire_model, "prompt": request.prompt,
            "duration": int(request.seconds), "resolution": tier_of(request.size),
            "aspect_ratio": aspect_ratio(request.size, RATIOS, tolerance=0.02),
            "generate_audio": bool(request.audio),
        }
        add_seed(body, caps, request)
        if request.first_frame:
            body["image"] = {"url": request.first_frame.data_uri()}
        return body

    async def submit(self, request: ShotRequest) -> JobRef:
        answer = await self.call("POST", "/v1/videos/generations", submit=True,
                                 body=self.body(request))
        job_id = answer.get("request_id") if isinstance(answer, dict) else None
        if not job_id:
            # Accepted but unnamed: the job may exist, so it must not be resubmitted blindly.
            raise PermanentError("xai: the submit answer has no request_id; check the console",
                                 reason="submit answer without request_id")
        return JobRef(self.name, str(job_id))

    async def _job(self, ref: JobRef) -> dict[str, Any]:
        job = await self.call("GET", f"/v1/videos/{ref.job_id}")
        return job if isinstance(job, dict) else {}

    async def poll(self, ref: JobRef) -> JobStatus:
        job = await self._job(ref)
        status = str(job.get("status", "")).lower()
        video = _video(job)
        if status == "done":
            if video.get("respect_moderation") is False:
                return JobStatus("failed", retryable=False, error=(
                    "moderation: xAI withheld the video because it did not pass content "
                    "moderation (xAI bills blocked jobs)"))
            return JobStatus("succeeded", progress=1.0)
        if status == "expired":
            return JobStatus("failed", retryable=False, error=(
                f"xai: request {ref.job_id} expired at xAI before a video was delivered; "
                "it was not resubmitted (xAI may bill it)"))
        if status in ("failed", "error"):  # not documented, but reported by relays
            said = self._scrub(str(job.get("error") or job.get("message") or "job failed"))
            return JobStatus("failed", error=f"xai: {said}", retryable=not self.is_moderation(said))
        # "pending", or a state this adapter does not know: keep waiting (the core's deadline
        # bounds it); reporting it failed could resubmit a job that is still running.
        progress = job.get("progress")
        fraction = progress / 100 if isinstance(progress, (int, float)) else None
        return JobStatus("running", progress=fraction)

    async def download(self, ref: JobRef, dest: Path) -> Path:
        # A fresh GET: the URL is not in the JobRef, and this works after a restart too.
        job = await self._job(ref)
        video = _video(job)
        url = video.get("url")
        if job.get("status") != "done" or not url:
            raise PermanentError(f"xai: request {ref.job_id} has no video URL "
                                 f"(status {job.get('status')!r})", reason="no video URL")
        return await self.fetch(str(url), dest)
