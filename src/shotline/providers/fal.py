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

Each model family spells its input differently (``duration`` is the string ``"5"`` on
Kling, ``"8s"`` on Veo 3 Fast and Luma); see the ``_body_*`` functions. fal does not bill
5xx answers, but may bill a 422, so a bad request is refused here before any call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from ..capabilities import Capabilities, tier_of
from ..errors import CapabilityError, PermanentError
from .base import JobRef, JobStatus, ShotRequest
from .http import HttpProvider, add_seed, aspect_ratio, check

# fal's error_type values that a second run can cure; content policy and input errors cannot.
TRANSIENT_ERRORS = ("internal_server_error", "generation_timeout", "downstream_service_error",
                    "downstream_service_unavailable", "runner_disconnected", "timeout")
def _kling(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": r.prompt, "duration": str(r.seconds),
                            "aspect_ratio": aspect_ratio(r.size)}
    if c.audio == "optional":  # Kling 4 always renders sound and has no switch
        body["generate_audio"] = r.audio
    return body


def _seedance(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    return {"prompt": r.prompt, "duration": str(r.seconds), "resolution": tier_of(r.size),
            "aspect_ratio": aspect_ratio(r.size), "generate_audio": r.audio}


def _wan(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    # No documented audio switch on the text route (audio_url is a soundtrack *input*).
    return {"prompt": r.prompt, "duration": str(r.seconds), "resolution": tier_of(r.size),
            "aspect_ratio": aspect_ratio(r.size)}


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
    ("kling", _kling), ("seedance", _seedance), ("wan", _wan), ("hailuo", _hailuo),
    ("veo3", _veo3_fast), ("luma/", _luma),
)


class FalProvider(HttpProvider):
    """fal.ai queue adapter; see the module docstring for the wire format."""

    name: ClassVar[str] = "fal"
    key_env: ClassVar[tuple[str, ...]] = ("FAL_KEY",)
    default_base_url: ClassVar[str] = "https://queue.fal.run"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self.api_key()}"}

    def validate(self, request: ShotRequest) -> None:
        """Refuse what the model cannot do (the core calls this before it writes anything)."""
        self._mapping(request)

    def _mapping(self, request: ShotRequest) -> tuple[Capabilities, Mapper]:
        caps = self.capabilities(request)
        check(request, caps)
        mapper = next((fn for word, fn in FAMILIES if word in request.wire_model), None)
        if mapper is None:
            raise CapabilityError(f"{request.model}: no input mapping for fal endpoint "
                                  f"{request.wire_model!r}")
        return caps, mapper

    def body(self, request: ShotRequest) -> dict[str, Any]:
        """fal's input for ``request``, or CapabilityError if the model cannot do it."""
        caps, mapper = self._mapping(request)
        return add_seed(mapper(request, caps), caps, request)

    async def submit(self, request: ShotRequest) -> JobRef:
        body = self.body(request)
        answer = await self.call("POST", f"/{request.wire_model.strip('/')}", body=body, submit=True)
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

    async def cancel(self, ref: JobRef) -> bool:
        try:
            await self.call("PUT", ref.data["cancel_url"])
        except PermanentError:  # 400 "already completed": nothing left to stop
            return False
        return True
