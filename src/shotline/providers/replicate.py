"""The ``replicate`` adapter: Replicate's predictions API for official video models.

Wire format (``Authorization: Bearer $REPLICATE_API_TOKEN``):

* ``POST /v1/models/{owner}/{name}/predictions`` with ``{"input": {...}}``; the input's
  fields are per model (read each model's ``/api`` schema). The answer is the prediction:
  ``{id, status, urls: {get, cancel}, output: null, error: null, ...}``.
* ``GET /v1/predictions/{id}``: ``starting`` (often a cold boot) -> ``processing`` ->
  ``succeeded | failed | canceled``. ``output`` is a URL string or a list of them; ``error``
  is free text such as "... flagged as sensitive ... (E005)" for moderation.
* ``POST /v1/predictions/{id}/cancel``.
* ``GET /v1/predictions`` lists predictions newest first (``results``, and a ``next``
  cursor URL on the same host), each with its ``model``, ``input`` and ``created_at``:
  :meth:`find` looks there for a prediction made from exactly our input after the lost
  submit (the time tells one take's prediction from an earlier take's, whose input is the
  same).
* ``Prefer: wait`` would hold the submit open for up to 60 s; a video outlasts that, and a
  long-held POST that times out is an ambiguous submit, so it is never sent.
* ``metrics.predict_time`` is GPU time, not the billed video seconds of per-second models,
  so it is not reported as ``billed_seconds``.
* Webhooks are signed in the Standard Webhooks scheme; :func:`verify_webhook` checks one.
  A webhook is only a hint: the prediction is fetched again with our own key.
* File inputs (first and last frames) may be sent inline as data URIs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..core.capabilities import Capabilities, tier_of
from ..errors import CapabilityError, PermanentError
from .base import JobRef, JobStatus, ShotRequest
from .http import (
    CLOCK_SLACK,
    HttpProvider,
    add_seed,
    aspect_ratio,
    check,
    parse_time,
    verify_signed,
)

LIST_PAGES = 20  # find() reads at most this many pages of recent predictions


def _frames(r: ShotRequest, first: str, last: str) -> dict[str, Any]:
    pairs = ((first, r.first_frame), (last, r.last_frame))
    return {name: image.data_uri() for name, image in pairs if image is not None}


def _veo(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    body = {"prompt": r.prompt, "duration": r.seconds, "aspect_ratio": aspect_ratio(r.size),
            "resolution": tier_of(r.size)}
    if c.audio == "optional":
        body["generate_audio"] = r.audio
    if r.references:  # up to 3, on 8 s calls without frames (the capability table says so)
        body["reference_images"] = [ref.data_uri() for ref in r.references]
    return body | _frames(r, "image", "last_frame")


def _gen4_turbo(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    assert r.first_frame is not None  # validate() refuses a text-only request
    return {"prompt": r.prompt, "duration": r.seconds, "aspect_ratio": aspect_ratio(r.size),
            "image": r.first_frame.data_uri()}


def _ray(r: ShotRequest, c: Capabilities) -> dict[str, Any]:
    return {"prompt": r.prompt, "duration": r.seconds, "aspect_ratio": aspect_ratio(r.size),
            "resolution": tier_of(r.size)} | _frames(r, "start_image", "end_image")


Mapper = Callable[[ShotRequest, Capabilities], dict[str, Any]]
FAMILIES: tuple[tuple[str, Mapper], ...] = (
    ("google/veo-", _veo), ("runwayml/gen4-turbo", _gen4_turbo), ("luma/ray", _ray),
)
INVALID_WORDS = ("invalid", "validation", "unsupported", "must be")


def verify_webhook(body: bytes, headers: Mapping[str, str], secret: str) -> str:
    """The prediction id of a Replicate webhook whose Standard Webhooks signature checks out.

    Raises PermanentError for a missing, bad or stale (over 5 minutes) signature. Verify the
    raw bytes as received: re-serialised JSON no longer matches the signature.
    """
    payload = verify_signed("replicate", body, headers, secret)
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        raise PermanentError("replicate webhook has no prediction id", reason="bad webhook body")
    return str(payload["id"])


class ReplicateProvider(HttpProvider):
    """Replicate predictions adapter; see the module docstring for the wire format."""

    name: ClassVar[str] = "replicate"
    key_env: ClassVar[tuple[str, ...]] = ("REPLICATE_API_TOKEN",)
    default_base_url: ClassVar[str] = "https://api.replicate.com"

    verify_webhook = staticmethod(verify_webhook)
    finds_jobs: ClassVar[bool] = True
    lookup: ClassVar[str] = ("the list of recent predictions, matched on the model, the exact "
                             "input and the time of the submit")

    def validate(self, request: ShotRequest) -> None:
        """Refuse what the model cannot do (the core calls this before it writes anything)."""
        self._mapping(request)

    def _mapping(self, request: ShotRequest) -> tuple[Capabilities, Mapper]:
        caps = self.capabilities(request)
        check(request, caps, images=True)
        wire, framed = request.wire_model, bool(request.first_frame or request.last_frame)
        mapper = next((fn for word, fn in FAMILIES if wire.startswith(word)), None)
        if mapper is None or wire.count("/") != 1:
            raise CapabilityError(f"{request.model}: no input mapping for Replicate model {wire!r}")
        if mapper is _gen4_turbo and request.first_frame is None:  # no text-only mode
            raise CapabilityError(f"{request.model} is image-to-video only: it needs a first frame")
        if mapper is _ray and request.seconds > 5 and framed:
            raise CapabilityError(f"{request.model}: 10 s clips are text-only; start/end images "
                                  "need 5 s")
        return caps, mapper

    def body(self, request: ShotRequest) -> dict[str, Any]:
        """Replicate's ``input`` for ``request``, or CapabilityError if the model cannot do it."""
        caps, mapper = self._mapping(request)
        return add_seed(mapper(request, caps), caps, request)

    async def submit(self, request: ShotRequest) -> JobRef:
        body = {"input": self.body(request)}
        answer = await self.call("POST", f"/v1/models/{request.wire_model}/predictions",
                                 body=body, submit=True)
        if not isinstance(answer, dict) or not answer.get("id"):
            raise PermanentError("replicate accepted the submit but its answer has no id: "
                                 f"{self._scrub(str(answer))[:300]}", reason="bad submit answer")
        return JobRef(self.name, str(answer["id"]), {"urls": answer.get("urls") or {}})

    async def poll(self, ref: JobRef) -> JobStatus:
        # The path is rebuilt, not taken from urls.get: the key goes only to our base URL.
        return self.status(await self.call("GET", f"/v1/predictions/{ref.job_id}"))

    def status(self, p: dict[str, Any]) -> JobStatus:
        state, step = p.get("status"), self.settings.poll_interval
        if state == "starting":  # usually a cold boot: no hurry
            return JobStatus("queued", next_poll=2 * step)
        if state == "processing":
            return JobStatus("running", next_poll=step)
        if state == "succeeded":
            return JobStatus("succeeded", progress=1.0)
        if state in ("failed", "canceled"):
            said = self._scrub(str(p.get("error") or f"the prediction was {state}"))
            transient = (state == "failed" and not self.is_moderation(said)
                         and not any(w in said.lower() for w in INVALID_WORDS))
            return JobStatus("failed", error=said, retryable=transient)
        return JobStatus("running", next_poll=step)  # an unknown state: keep watching

    async def download(self, ref: JobRef, dest: Path) -> Path:
        p = await self.call("GET", f"/v1/predictions/{ref.job_id}")
        output = p.get("output")
        url = output[0] if isinstance(output, list) and output else output
        if not isinstance(url, str) or not url:
            raise PermanentError(f"replicate prediction {ref.job_id} has no output file",
                                 reason="no output in the prediction")
        return await self.fetch(url, dest)

    async def find(self, request: ShotRequest, since: float) -> JobRef | None:
        """The prediction made from exactly this request's input at or after ``since``."""
        wanted = self.body(request)
        url: str | None = "/v1/predictions"
        for _ in range(LIST_PAGES):
            if url is None:
                return None
            page = await self.call("GET", url)
            results = page.get("results") if isinstance(page, dict) else None
            if not isinstance(results, list):
                raise PermanentError("replicate: the prediction list has no 'results'",
                                     reason="bad list answer")
            for p in results:
                created = parse_time(p.get("created_at"))
                if created is not None and created < since - CLOCK_SLACK:
                    return None  # newest first: everything further is older still
                if p.get("model") == request.wire_model and p.get("input") == wanted and p.get("id"):
                    return JobRef(self.name, str(p["id"]), {"urls": p.get("urls") or {}})
            nxt = page.get("next")
            # The cursor must stay on our own host: the key goes with it.
            url = str(nxt) if nxt and self._own_host(str(nxt)) else None
        raise PermanentError(f"replicate: more than {LIST_PAGES} pages of predictions since "
                             "the submit; cannot tell", reason="lookup window too large")

    async def cancel(self, ref: JobRef) -> bool:
        try:
            await self.call("POST", f"/v1/predictions/{ref.job_id}/cancel")
        except PermanentError:
            return False
        return True
