"""The ``openai`` provider: the ``/v1/videos`` wire format, as gateways still speak it.

OpenAI shut down Sora 2 and its own Videos API on 2026-09-24 (the table marks the
``openai/sora-*`` models sunset, so they refuse work at planning time). The wire format
lives on in gateways and resellers: point ``SHOTLINE_OPENAI_BASE_URL`` at one and add its
model through an overrides file. Quirks that shaped this adapter:

* ``POST /v1/videos`` takes ``model``, ``prompt``, ``seconds`` and ``size``. ``seconds`` is
  a *string* ("4", "8", "12") and ``size`` is ``WxH``; there is no seed, fps or audio
  parameter (Sora always makes audio), so none is sent. JSON is used: the official SDK
  sends multipart only because of the optional image upload, which shotline does not send.
* Every answer is a video object ``{id, object: "video", status, progress (0-100),
  error: {code, message}}``; status is ``queued | in_progress | completed | failed``.
* The file is ``GET /v1/videos/{id}/content`` on the same host, authenticated, and it
  expires (``expires_at``): it is fetched as soon as the job completes.
* No idempotency key is honoured, so a lost answer to the POST is never retried blindly
  (``HttpProvider.call`` raises ``AmbiguousSubmitError``) and there is no ``find``.
* Webhooks are Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``, ``whsec_`` secret): see :func:`verify_webhook`. They are hints;
  polling stays the source of truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import httpx

from ..errors import PermanentError
from ..settings import Settings
from .base import JobRef, JobState, JobStatus, ShotRequest
from .http import MODERATION_WORDS, HttpProvider, verify_signed

STATES: dict[str, JobState] = {
    "queued": "queued", "in_progress": "running", "completed": "succeeded", "failed": "failed",
}
# error.code values (OpenAI's own and gateways') that the same request would hit again.
FINAL_CODES = (*MODERATION_WORDS, "moderation_blocked", "content_policy", "policy", "blocked",
               "invalid", "unsupported")


def verify_webhook(body: bytes, headers: Mapping[str, str], secret: str) -> str:
    """Check a Standard Webhooks signature and return the event's video id.

    ``body`` must be the raw bytes as received: re-serialised JSON no longer matches the
    signature. A bad, missing or stale (over 5 minutes) signature raises PermanentError.
    """
    event = verify_signed("openai", body, headers, secret)
    data = event.get("data") if isinstance(event, dict) else None
    video_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(video_id, str) or not video_id:
        raise PermanentError("openai: signed webhook has no data.id", reason="no video id")
    return video_id


class OpenAIProvider(HttpProvider):
    """The OpenAI-compatible Videos API; see the module docstring for the wire format."""

    name: ClassVar[str] = "openai"
    key_env: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.openai.com"

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        # A missing key stops the render before any shot is claimed: a claim left behind
        # by a failed first submit would later look like a lost submit.
        self.api_key()
        super().__init__(settings, transport)

    def video_path(self, job_id: str, suffix: str = "") -> str:
        return f"/v1/videos/{quote(job_id, safe='')}{suffix}"

    async def submit(self, request: ShotRequest) -> JobRef:
        body = {"model": request.wire_model, "prompt": request.prompt,
                "seconds": str(request.seconds), "size": request.size}
        video = await self.call("POST", "/v1/videos", body=body, submit=True)
        job_id = video.get("id") if isinstance(video, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise PermanentError(f"openai: POST /v1/videos answered without an id: "
                                 f"{self._scrub(str(video))[:200]}", reason="no video id")
        return JobRef(self.name, job_id)

    async def poll(self, ref: JobRef) -> JobStatus:
        video = await self.call("GET", self.video_path(ref.job_id))
        video = video if isinstance(video, dict) else {}
        state = STATES.get(str(video.get("status")))
        progress = video.get("progress")
        fraction = min(1.0, float(progress) / 100) if isinstance(progress, int | float) else None
        if state is None:  # an unknown status from a gateway: keep polling, do not guess
            return JobStatus("running", progress=fraction)
        if state != "failed":
            return JobStatus(state, progress=fraction)
        error = video.get("error") or {}
        error = error if isinstance(error, dict) else {"message": str(error)}
        code = str(error.get("code") or "unknown")
        said = self._scrub(str(error.get("message") or "no message"))
        final = any(word in f"{code} {said}".lower() for word in FINAL_CODES)
        kind = "moderation" if self.is_moderation(f"{code} {said}") else code
        return JobStatus("failed", error=f"{kind}: {said} ({code})", retryable=not final)

    async def download(self, ref: JobRef, dest: Path) -> Path:
        # Same host as the API, so fetch() sends the key; 403/404/410 mean it expired.
        return await self.fetch(self.url(self.video_path(ref.job_id, "/content")), dest)

    async def cancel(self, ref: JobRef) -> bool:
        try:
            await self.call("DELETE", self.video_path(ref.job_id))
        except PermanentError:  # already gone or never ours: nothing left to cancel
            return False
        return True

    verify_webhook = staticmethod(verify_webhook)
