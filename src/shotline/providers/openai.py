"""The ``openai`` provider: the ``/v1/videos`` wire format, for OpenAI-compatible gateways.

OpenAI shut down Sora 2 and its own Videos API on 2026-09-24 (the table marks the
``openai/sora-*`` models sunset, so they refuse work at planning time). The wire format
lives on in gateways: LiteLLM's proxy, resellers, xAI's ``/v1/videos``. Each gateway is
declared once in the overrides file and each of its models names it::

    [gateways.litellm]
    base_url = "http://localhost:4000"        # the part before /v1/videos
    key_env = "LITELLM_API_KEY"                # the variable holding its key (optional)

    [models."openai/litellm-veo"]
    gateway = "litellm"
    wire_model = "vertex_ai/veo-3.1-generate-001"   # whatever id the gateway expects
    reason = "..."; expires = 2027-06-01; durations = [4, 6, 8]; ...

A model with no ``gateway`` goes to OpenAI's own API (``SHOTLINE_OPENAI_BASE_URL``,
``OPENAI_API_KEY``). Each gateway's key is sent to that gateway's own origin only, and is
scrubbed from every message like the others. Quirks that shaped this adapter (checked
against the ``openai`` SDK's types):

* ``POST /v1/videos`` takes ``model``, ``prompt``, ``seconds`` and ``size``. ``seconds`` is
  a *string* and ``size`` is ``WxH``; there is no seed, fps or audio parameter, so none is
  sent. JSON is used: the SDK sends multipart only because of the optional image upload,
  which shotline does not send (frames are refused before any call).
* Every answer is a video object ``{id, object: "video", status, progress (0-100),
  created_at, prompt, model, seconds, size, error: {code, message}}``; status is
  ``queued | in_progress | completed | failed``.
* The file is ``GET /v1/videos/{id}/content`` on the same host, authenticated, and it
  expires (``expires_at``): it is fetched as soon as the job completes.
* No idempotency key is honoured. ``GET /v1/videos?order=desc&limit=&after=`` lists
  videos newest first, so :meth:`find` looks there for a video made from exactly our
  request after the lost submit. A gateway without that list answers an error, and the
  shot is then left for an operator, never resubmitted blindly.
* Webhooks are Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``, ``whsec_`` secret): see :func:`verify_webhook`. They are hints;
  polling stays the source of truth.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from ..core.capabilities import Gateway, table_for
from ..errors import ConfigError, PermanentError
from .base import JobRef, JobState, JobStatus, ShotRequest
from .http import CLOCK_SLACK, MODERATION_WORDS, HttpProvider, check, verify_signed

STATES: dict[str, JobState] = {
    "queued": "queued", "in_progress": "running", "completed": "succeeded", "failed": "failed",
}
# error.code values (OpenAI's own and gateways') that the same request would hit again.
FINAL_CODES = (*MODERATION_WORDS, "moderation_blocked", "content_policy", "policy", "blocked",
               "invalid", "unsupported")
LIST_PAGE, LIST_PAGES = 100, 10  # find() reads at most this many recent videos


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
    finds_jobs: ClassVar[bool] = True
    lookup: ClassVar[str] = ("GET /v1/videos, the gateway's list of videos, matched on the model, "
                             "prompt, seconds, size and time; a gateway without that list "
                             "leaves the shot for an operator")

    verify_webhook = staticmethod(verify_webhook)

    @classmethod
    def has_credentials(cls) -> bool:
        # Each gateway names its own key: it is checked per model, by preflight, before a
        # render writes anything (a claim left by a failed first submit would later look
        # like a lost submit).
        return True

    # -- gateways -----------------------------------------------------------------------

    def _gateways(self) -> dict[str, Gateway]:
        return table_for(self.settings.overrides_path).gateways

    def _target(self, gateway: str | None) -> tuple[str, dict[str, str]]:
        """The base URL and auth headers for ``gateway`` (None: OpenAI's own API)."""
        if gateway is None:
            return self.base_url, self.auth_headers()
        gw = self._gateways().get(gateway)
        if gw is None:
            raise ConfigError(f"openai: gateway {gateway!r} is not declared under [gateways] in "
                              f"{self.settings.overrides_path}")
        if gw.key_env is None:
            return gw.url, {}
        key = os.environ.get(gw.key_env)
        if not key:
            raise ConfigError(f"openai: no API key for gateway {gateway!r}; set {gw.key_env}")
        return gw.url, {"Authorization": f"Bearer {key}"}

    def secrets(self) -> list[str]:
        gateways = [os.environ.get(gw.key_env) for gw in self._gateways().values() if gw.key_env]
        return super().secrets() + [key for key in gateways if key]

    def _ref_target(self, ref: JobRef) -> tuple[str, dict[str, str]]:
        gateway = ref.data.get("gateway")
        return self._target(str(gateway) if gateway else None)

    # -- the protocol -------------------------------------------------------------------

    def preflight(self, request: ShotRequest) -> None:
        """A key for the model's gateway, and a request its model can take; no I/O."""
        self.validate(request)
        self._target(self.capabilities(request).gateway)

    def validate(self, request: ShotRequest) -> None:
        check(request, self.capabilities(request))  # frames refused: no upload is sent

    def body(self, request: ShotRequest) -> dict[str, Any]:
        return {"model": request.wire_model, "prompt": request.prompt,
                "seconds": str(request.seconds), "size": request.size}

    @staticmethod
    def video_path(job_id: str, suffix: str = "") -> str:
        return f"/v1/videos/{quote(job_id, safe='')}{suffix}"

    async def submit(self, request: ShotRequest) -> JobRef:
        self.validate(request)
        gateway = self.capabilities(request).gateway
        base, auth = self._target(gateway)
        video = await self.call("POST", f"{base}/v1/videos", body=self.body(request),
                                headers=auth, submit=True)
        job_id = video.get("id") if isinstance(video, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise PermanentError(f"openai: POST /v1/videos answered without an id: "
                                 f"{self._scrub(str(video))[:200]}", reason="no video id")
        return JobRef(self.name, job_id, {"gateway": gateway} if gateway else {})

    async def poll(self, ref: JobRef) -> JobStatus:
        base, auth = self._ref_target(ref)
        video = await self.call("GET", base + self.video_path(ref.job_id), headers=auth)
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
        # Same host as the API, so the key goes along; 403/404/410 mean it expired.
        base, auth = self._ref_target(ref)
        return await self.fetch(base + self.video_path(ref.job_id, "/content"), dest,
                                headers=auth)

    async def cancel(self, ref: JobRef) -> bool:
        base, auth = self._ref_target(ref)
        try:
            await self.call("DELETE", base + self.video_path(ref.job_id), headers=auth)
        except PermanentError:  # already gone or never ours: nothing left to cancel
            return False
        return True

    async def find(self, request: ShotRequest, since: float) -> JobRef | None:
        """The video made from exactly this request at or after ``since``, newest first."""
        gateway = self.capabilities(request).gateway
        base, auth = self._target(gateway)
        wanted = self.body(request)
        params: dict[str, Any] = {"limit": LIST_PAGE, "order": "desc"}
        for _ in range(LIST_PAGES):
            page = await self.call("GET", f"{base}/v1/videos", headers=auth, params=params)
            videos = page.get("data") if isinstance(page, dict) else None
            if not isinstance(videos, list):
                raise PermanentError("openai: the video list has no 'data'",
                                     reason="bad list answer")
            for video in videos:
                created = video.get("created_at")
                if isinstance(created, int | float) and created < since - CLOCK_SLACK:
                    return None  # newest first: everything further is older still
                if all(str(video.get(k)) == v for k, v in wanted.items()) and video.get("id"):
                    return JobRef(self.name, str(video["id"]),
                                  {"gateway": gateway} if gateway else {})
            if not page.get("has_more") or not videos:
                return None
            params["after"] = videos[-1].get("id")
        raise PermanentError(f"openai: more than {LIST_PAGE * LIST_PAGES} videos since the "
                             "submit; cannot tell", reason="lookup window too large")
