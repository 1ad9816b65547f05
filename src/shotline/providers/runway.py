"""The ``runway`` provider: Gen-4.5, Gen-4 Turbo and Veo 3.1 through ``api.dev.runwayml.com``.

Wire format (runwayml/sdk-python types and docs.dev.runwayml.com):

* Every request carries ``Authorization: Bearer $RUNWAYML_API_SECRET`` *and*
  ``X-Runway-Version: 2024-11-06``; without the version header the API answers 400.
* ``POST /v1/text_to_video`` (or ``/v1/image_to_video`` when a first frame is given) with
  ``model``, ``promptText``, ``ratio`` as a ``"1280:720"`` string (the size, not a named
  ratio), ``duration`` as an integer, ``seed`` for models that have one (gen4.x, Veo 3.1) and
  ``audio`` (bool) only for the Veo models, where it is optional and changes the price.
  Frames go in ``promptImage`` as ``[{"uri": <data URI>, "position": "first"|"last"}]``.
  The Seedance models take the cast's pictures on the text route as ``references``
  (``[{"uri": <data URI>}]``, up to 9, never beside frames). Runway takes data URIs of up
  to 5 MB, so a larger image is refused here before any call.
  The answer is ``{"id": <task id>}``.
* ``hailuo3`` (MiniMax H3) and ``grok_imagine_1_5`` take a named ``ratio`` (``"16:9"``)
  and a ``resolution`` tier instead; the other resold models (Kling 3.0, Seedance 2.x,
  Gemini Omni Flash) take pixel ratios like Runway's own.
* ``gen4_turbo`` is image-to-video only, and ``gen4.5`` text-to-video takes only 1280:720
  and 720:1280: both are refused here (CapabilityError) before any billable call.
* ``GET /v1/tasks/{id}``: ``PENDING`` and ``THROTTLED`` (over the concurrency limit:
  queued by Runway, not refused) -> queued; ``RUNNING`` with ``progress`` (0..1);
  ``SUCCEEDED`` with ``output`` (a list of URLs that expire in 24-48 h); ``FAILED`` with
  ``failure`` and ``failureCode``; ``CANCELLED``. Moderation is reported as a FAILED task
  with a ``SAFETY.*`` code, never retried (and billed by Runway, like every failure:
  see ``billed_on_failure`` in the table); only ``INTERNAL*`` codes are worth a new try.
* ``DELETE /v1/tasks/{id}`` cancels a running task (or deletes a finished one).
* No idempotency header and no lookup by client key is documented, so there is no
  ``find``: a submit whose answer was lost is never resubmitted by the core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..core.capabilities import Capabilities, parse_size, tier_of
from ..errors import CapabilityError, PermanentError
from .base import ImageInput, JobRef, JobStatus, ShotRequest
from .http import HttpProvider, add_seed, aspect_ratio, check

VERSION = "2024-11-06"
IMAGE_ONLY = frozenset({"gen4_turbo"})  # models without a text-only route
# Models that take a named ratio and a resolution tier instead of a "W:H" pixel ratio.
NAMED_RATIOS = {"hailuo3": ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16"),
                "grok_imagine_1_5": ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")}
T2V_RATIOS = {"gen4.5": ("1280:720", "720:1280")}  # text-only ratios, where narrower
MAX_DATA_URI = 5 * 1024 * 1024  # characters of an inline image Runway accepts


def _uri(request: ShotRequest, image: ImageInput) -> str:
    uri = image.data_uri()
    if len(uri) > MAX_DATA_URI:
        raise CapabilityError(f"{request.model}: an input image of {len(image.data)} bytes is "
                              f"over Runway's {MAX_DATA_URI // (1024 * 1024)} MB for an inline "
                              "image (base64 adds a third); give a smaller one. Nothing was sent")
    return uri


def retryable_code(code: str) -> bool:
    """Only Runway's internal hiccups are worth a new (billed) try; SAFETY.* never is."""
    return "SAFETY" not in code and (code.startswith("INTERNAL") or ".INTERNAL" in code)


class RunwayProvider(HttpProvider):
    """Runway's task API; see the module docstring for the vendor's quirks."""

    name: ClassVar[str] = "runway"
    key_env: ClassVar[tuple[str, ...]] = ("RUNWAYML_API_SECRET",)
    default_base_url: ClassVar[str] = "https://api.dev.runwayml.com"
    lookup: ClassVar[str] = (
        "Runway has no task list and no idempotency key: check the task history of the Runway "
        "developer portal for a task created after the submit")


    def auth_headers(self) -> dict[str, str]:
        # Sent only to Runway's own host (see HttpProvider.call), never to the file CDN.
        return {**super().auth_headers(), "X-Runway-Version": VERSION}

    def validate(self, request: ShotRequest) -> None:
        """Refuse what the model cannot do (the core calls this before it writes anything)."""
        self.endpoint(request)

    def endpoint(self, request: ShotRequest) -> tuple[str, dict[str, Any]]:
        """The path and JSON body for ``request``, or CapabilityError before any call."""
        caps: Capabilities = self.capabilities(request)
        check(request, caps, images=True)
        width, height = parse_size(request.size)
        ratio = f"{width}:{height}"
        model = request.wire_model
        if request.first_frame is None:
            if model in IMAGE_ONLY:
                raise CapabilityError(f"{request.model} is image-to-video only: Runway has no "
                                      "text-only route for it; give a first frame or use "
                                      "runway/gen4.5")
            if request.last_frame is not None:
                raise CapabilityError(f"{request.model}: a last frame needs a first frame too")
            allowed = T2V_RATIOS.get(model)
            if allowed and ratio not in allowed:
                raise CapabilityError(f"{request.model}: text-to-video takes only "
                                      f"{', '.join(allowed)}; {ratio} needs a first frame")
        body: dict[str, Any] = {"model": model, "promptText": request.prompt, "ratio": ratio,
                                "duration": int(request.seconds)}
        if model in NAMED_RATIOS:
            body |= {"ratio": aspect_ratio(request.size, NAMED_RATIOS[model], tolerance=0.02),
                     "resolution": tier_of(request.size)}
        add_seed(body, caps, request)
        if caps.audio == "optional":  # Veo: the switch exists and changes the price
            body["audio"] = bool(request.audio)
        if request.first_frame is None:
            if request.references:
                body["references"] = [{"uri": _uri(request, r)} for r in request.references]
            return "/v1/text_to_video", body
        frames = [(request.first_frame, "first"), (request.last_frame, "last")]
        body["promptImage"] = [{"uri": _uri(request, p), "position": pos}
                               for p, pos in frames if p]
        return "/v1/image_to_video", body

    async def submit(self, request: ShotRequest) -> JobRef:
        path, body = self.endpoint(request)
        answer = await self.call("POST", path, submit=True, body=body)
        task_id = answer.get("id") if isinstance(answer, dict) else None
        if not task_id:
            # Accepted but unnamed: a task may exist, so this must not be resubmitted blindly.
            raise PermanentError("runway accepted the submit but its answer has no task id",
                                 reason="submit answer without id")
        return JobRef(self.name, str(task_id))

    async def _task(self, ref: JobRef) -> dict[str, Any]:
        task = await self.call("GET", f"/v1/tasks/{ref.job_id}")
        return task if isinstance(task, dict) else {}

    async def poll(self, ref: JobRef) -> JobStatus:
        task = await self._task(ref)
        status = str(task.get("status", "")).upper()
        progress = task.get("progress")
        fraction = float(progress) if isinstance(progress, (int, float)) else None
        if status in ("PENDING", "THROTTLED"):
            return JobStatus("queued", progress=fraction)
        if status == "RUNNING":
            return JobStatus("running", progress=fraction)
        if status == "SUCCEEDED":
            return JobStatus("succeeded", progress=1.0)
        if status == "CANCELLED":
            return JobStatus("failed", error=f"runway: task {ref.job_id} was cancelled",
                             retryable=False)
        if status == "FAILED":
            code = str(task.get("failureCode") or "")
            said = self._scrub(str(task.get("failure") or "the task failed"))
            kind = "moderation: " if "SAFETY" in code or self.is_moderation(said) else ""
            return JobStatus("failed", error=f"{kind}runway: {said}" + (f" ({code})" if code else ""),
                             retryable=retryable_code(code))
        # An unknown status is not a verdict: keep polling rather than fail a paid task.
        return JobStatus("running", progress=fraction)

    async def download(self, ref: JobRef, dest: Path) -> Path:
        # A fresh read of the task: output URLs are not kept in the JobRef and they expire.
        task = await self._task(ref)
        output = task.get("output")
        if task.get("status") != "SUCCEEDED" or not isinstance(output, list) or not output:
            raise PermanentError(f"runway: task {ref.job_id} has no output URL "
                                 f"(status {task.get('status')!r})", reason="no output URL")
        return await self.fetch(str(output[0]), dest)

    async def cancel(self, ref: JobRef) -> bool:
        await self.call("DELETE", f"/v1/tasks/{ref.job_id}")
        return True
