"""The ``byteplus`` provider: Seedance on BytePlus ModelArk (``ark.ap-southeast.bytepluses.com``).

Wire format (ModelArk video generation API, as mirrored by third parties; error codes from
the ModelArk error-code page):

* ``POST /api/v3/contents/generations/tasks`` with ``model`` and ``content``: a list whose
  text item carries the prompt and whose ``image_url`` items carry a ``role``
  (``first_frame``, ``last_frame``, or ``reference_image`` for up to 9 pictures of the
  cast; frames and references never in one task, and a last frame only with a first).
  Images go inline as data URIs; Seedance refuses pictures under 300 px a side or
  outside 2:5..5:2, and so does this adapter, before any call. The parameters go in
  top-level fields: ``duration``
  (integer seconds, 4-15), ``resolution`` (``"480p"``/``"720p"``/``"1080p"``), ``ratio``
  (``"16:9"``, ``"9:16"``, ``"1:1"``, ``"4:3"``, ``"3:4"``, ``"21:9"``), ``seed`` and
  ``generate_audio``. (Older Seedance models read ``--duration 5 --ratio 16:9`` flags
  appended to the text; the fields are the documented form for 2.0, so no flags are added
  and a prompt's own ``--`` words reach the model untouched.) It answers ``{"id": ...}``.
* ``GET .../tasks/{id}``: ``status`` ``queued``, ``running``, ``succeeded`` (with
  ``content.video_url``), ``failed`` (with ``error: {code, message}``), ``cancelled`` or
  ``expired`` (left in the queue past its expiry).
* Errors come as ``{"error": {"code", "message", "type"}}``. Moderation refusals are
  400 ``...SensitiveContentDetected...`` or ``...RiskDetection`` codes: never retried.
* ``usage`` counts tokens (video is priced per token), not seconds, so it never becomes
  ``billed_seconds``; the table's per-second estimate stands.
* Output URLs are cleared after 24 h: the core downloads at once.
* ``DELETE .../tasks/{id}`` cancels a *queued* task but deletes the record of a finished
  one, so ``cancel`` looks first and deletes only what is still queued.
* Keys work in one region only (Asia-Pacific for Seedance); there is no lookup by client
  key, so a lost submit answer is left to the core, which will not resubmit it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import httpx

from ..core.capabilities import tier_of
from ..errors import CapabilityError, PermanentError
from .base import JobRef, JobState, JobStatus, ShotRequest
from .http import HttpProvider, add_seed, aspect_ratio, check

TASKS = "/api/v3/contents/generations/tasks"
RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
STATES: dict[str, JobState] = {"queued": "queued", "running": "running",
                               "succeeded": "succeeded"}
MODERATION_CODES = ("SensitiveContent", "RiskDetection", "PolicyViolation")
# Errors that the same request would meet again: retrying only costs money.
PERMANENT_CODES = ("InvalidParameter", "MissingParameter", "InvalidEndpoint", "NotFound")


def _error(body: Any) -> tuple[str, str]:
    """(code, message) from a task or error body; empty strings if absent."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return "", ""
    return str(err.get("code") or ""), str(err.get("message") or "")


class BytePlusProvider(HttpProvider):
    """Seedance on ModelArk; see the module docstring for the vendor's quirks."""

    name: ClassVar[str] = "byteplus"
    key_env: ClassVar[tuple[str, ...]] = ("ARK_API_KEY",)
    default_base_url: ClassVar[str] = "https://ark.ap-southeast.bytepluses.com"
    lookup: ClassVar[str] = (
        "ModelArk lists tasks by model and status, but a task does not carry its prompt, so "
        "shots cannot be told apart: check the ModelArk console for a task of this model "
        "created after the submit")


    def validate(self, request: ShotRequest) -> None:
        """Refuse what the model cannot do (the core calls this before it writes anything)."""
        self.body(request)

    def body(self, request: ShotRequest) -> dict[str, Any]:
        caps = self.capabilities(request)
        check(request, caps, images=True)
        if request.last_frame and not request.first_frame:
            raise CapabilityError(f"{request.model}: a last frame needs a first frame too; "
                                  "nothing was sent")
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        roles = [("first_frame", request.first_frame), ("last_frame", request.last_frame)]
        for role, image in [*roles, *(("reference_image", r) for r in request.references)]:
            if image:
                image.require(request.model, min_side=300, ratio=(0.4, 2.5))
                content.append({"type": "image_url", "image_url": {"url": image.data_uri()},
                                "role": role})
        body: dict[str, Any] = {
            "model": request.wire_model, "content": content,
            "duration": int(request.seconds), "resolution": tier_of(request.size),
            "ratio": aspect_ratio(request.size, RATIOS, tolerance=0.02),
        }
        if caps.audio == "optional":  # the switch exists only where audio is optional
            body["generate_audio"] = bool(request.audio)
        return add_seed(body, caps, request)

    def raise_for(self, resp: httpx.Response) -> None:
        """Keep ModelArk's error code in the message: it is what its docs and support use."""
        if not resp.is_success and resp.status_code == 400:
            try:
                code, message = _error(resp.json())
            except (json.JSONDecodeError, UnicodeDecodeError):
                code, message = "", ""
            if any(word in code for word in MODERATION_CODES):
                said = self._scrub(f"{code}: {message}")
                raise PermanentError(f"{self.name} answered 400: {said}",
                                     reason=f"moderation: {said}")
        super().raise_for(resp)

    async def submit(self, request: ShotRequest) -> JobRef:
        answer = await self.call("POST", TASKS, submit=True, body=self.body(request))
        job_id = answer.get("id") if isinstance(answer, dict) else None
        if not job_id:
            # Accepted but unnamed: the task may exist, so it must not be resubmitted blindly.
            raise PermanentError("byteplus: the submit answer has no task id; check the console",
                                 reason="submit answer without task id")
        return JobRef(self.name, str(job_id))

    async def _task(self, ref: JobRef) -> dict[str, Any]:
        task = await self.call("GET", f"{TASKS}/{ref.job_id}")
        return task if isinstance(task, dict) else {}

    async def poll(self, ref: JobRef) -> JobStatus:
        task = await self._task(ref)
        status = str(task.get("status", "")).lower()
        if status in STATES:
            return JobStatus(STATES[status], progress=1.0 if status == "succeeded" else None)
        code, message = _error(task)
        said = self._scrub(f"{code}: {message}" if code else message or f"task {status}")
        if status == "cancelled":
            return JobStatus("failed", error=f"byteplus: task {ref.job_id} was cancelled",
                             retryable=False)
        if status == "expired":
            return JobStatus("failed", retryable=False, error=(
                f"byteplus: task {ref.job_id} expired in ModelArk's queue before it ran; "
                "it was not resubmitted"))
        if status != "failed":  # a state this adapter does not know: wait, never resubmit
            return JobStatus("running")
        moderated = any(word in code for word in MODERATION_CODES) or self.is_moderation(said)
        permanent = moderated or any(code.startswith(p) for p in PERMANENT_CODES)
        kind = "moderation: " if moderated else ""
        return JobStatus("failed", error=f"{kind}byteplus: {said}", retryable=not permanent)

    async def download(self, ref: JobRef, dest: Path) -> Path:
        # A fresh GET: the URL is not in the JobRef, and this works after a restart too.
        task = await self._task(ref)
        content = task.get("content")
        url = content.get("video_url") if isinstance(content, dict) else None
        if task.get("status") != "succeeded" or not url:
            raise PermanentError(f"byteplus: task {ref.job_id} has no video URL "
                                 f"(status {task.get('status')!r})", reason="no video URL")
        return await self.fetch(str(url), dest)

    async def cancel(self, ref: JobRef) -> bool:
        # DELETE on a finished task erases its record (and URL): only cancel queued ones.
        if str((await self._task(ref)).get("status")) != "queued":
            return False
        try:
            await self.call("DELETE", f"{TASKS}/{ref.job_id}")
        except PermanentError:  # it started running meanwhile: running tasks cannot be cancelled
            return False
        return True
