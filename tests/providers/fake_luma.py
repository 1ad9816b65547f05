"""A fake Luma API on a :class:`VendorServer`: both APIs, a CDN path, scripted faults.

The Agents API (Ray 3.2) is served under ``/v1`` and the legacy Dream Machine API (Ray 2)
under ``/dream-machine/v1``, as on Luma's two hosts; tests point
``SHOTLINE_LUMA_BASE_URL`` and ``SHOTLINE_LUMA_LEGACY_BASE_URL`` at them. The shapes are
those of the official SDKs' types (``luma_agents.types.Generation``,
``lumaai.types.Generation``):

* Agents: ``POST /v1/generations``; ``state`` ``queued`` -> ``processing`` ->
  ``completed`` with ``output: [{"type": "video", "url"}]``, or ``failed`` with
  ``failure_code`` and ``failure_reason``.
* Dream Machine: ``POST /dream-machine/v1/generations/video``; ``state`` ``queued`` ->
  ``dreaming`` -> ``completed`` with ``assets.video``, or ``failed``; ``GET
  /dream-machine/v1/generations?limit&offset`` lists generations newest first, each with
  ``created_at`` and its ``request``.

Errors are ``{"detail": ...}``.
Files come from ``http://localhost:PORT/cdn/...``: another host for the client, like
Luma's presigned storage URLs, so the key must not be sent there.

Faults are scripted per prompt word (``fake.on("dips", "429")``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from re import Match
from typing import Any, ClassVar

from .vendor_server import Request, Response, ScriptedFaults, Submit, VendorServer

KEY = "luma-test-key-123456"
AGENTS = "/v1"
LEGACY = "/dream-machine/v1"
# Submit faults: 429 (Retry-After), 503, refused (400 from prompt moderation), slow;
# generation faults: moderation (failed with a moderation failure_reason), fail (failed,
# transient), truncate, gone (the file URL answers 410).
FAULTS = ("429", "503", "refused", "slow", "moderation", "fail", "truncate", "gone")
STATES = {AGENTS: ("queued", "processing", "processing", "completed"),
          LEGACY: ("queued", "dreaming", "dreaming", "completed")}
REFUSAL = "Prompt not allowed because advanced moderation failed"
FAILED_MODERATION = "The generated video was blocked by content moderation"


@dataclass
class FakeLuma(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS

    server: VendorServer
    clip_bytes: Callable[[int], bytes]
    key: str = KEY
    retry_after: float = 1.0
    slow_seconds: float = 2.0
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)

    def _auth(self, req: Request) -> Response | None:
        if req.headers.get("authorization", "") == f"Bearer {self.key}":
            return None
        return Response(401, {"detail": "Invalid API key"})

    def _generation(self, job_id: str, job: dict[str, Any], state: str) -> dict[str, Any]:
        port = self.server.url.rsplit(":", 1)[1]
        done = state == "completed"
        video = f"http://localhost:{port}/cdn/{job_id}.mp4?X-Amz-Signature=x" if done else None
        common = {"id": job_id, "state": state, "model": job["model"], "failure_reason": None,
                  "created_at": job["created_at"]}
        if job["api"] == AGENTS:
            return {**common, "type": "video", "failure_code": None,
                    "output": [{"type": "video", "url": video}] if done else None}
        return {**common, "generation_type": "video", "assets": {"video": video},
                "request": job["request"]}

    def submit(self, req: Request, m: Match[str]) -> Response:
        if denied := self._auth(req):
            return denied
        body = req.json()
        prompt = str(body.get("prompt", ""))
        nested = body.get("video") if m["api"] == AGENTS else body
        with self.lock:
            fault = self._fault(prompt)
            refused = {
                "429": Response(429, {"detail": "Too many concurrent generations"},
                                headers={"retry-after": f"{self.retry_after:g}"}),
                "503": Response(503, {"detail": "Service Unavailable"}),
                "refused": Response(400, {"detail": REFUSAL}),
            }.get(fault or "")
            if refused is not None:
                self.submits.append(Submit(time.monotonic(), prompt, refused.status, None, body))
                return refused
            job_id = str(uuid.uuid4())
            created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            job = {"polls": 0, "fault": fault, "api": m["api"], "model": body["model"],
                   "duration": int(str(nested["duration"]).rstrip("s")), "created_at": created,
                   "request": {**body, "generation_type": "video"}}
            self.jobs[job_id] = job
            self.submits.append(Submit(time.monotonic(), prompt, 201, job_id, body))
        answer = self._generation(job_id, job, "queued")
        if fault == "slow":  # the job exists, but the answer comes after the client gave up
            return Response(201, answer, delay=self.slow_seconds, headers={"connection": "close"})
        return Response(201, answer)

    def status(self, req: Request, m: Match[str]) -> Response:
        if denied := self._auth(req):
            return denied
        with self.lock:
            job = self.jobs.get(m["id"])
            if job is None or job["api"] != m["api"]:  # each API knows only its own jobs
                return Response(404, {"detail": "Generation not found"})
            states = STATES[job["api"]]
            state = states[min(job["polls"], len(states) - 1)]
            job["polls"] += 1
            self.served.append(state)
        answer = self._generation(m["id"], job, state)
        if state == "completed" and job["fault"] in ("moderation", "fail"):
            reason = FAILED_MODERATION if job["fault"] == "moderation" else \
                "Job failed due to an internal error, please try again"
            answer.update(state="failed", failure_reason=reason)
            if job["api"] == AGENTS:
                answer.update(output=None, failure_code="content_moderated"
                              if job["fault"] == "moderation" else "generation_failed")
            else:
                answer.update(assets={"video": None})
        return Response(200, answer)

    def listing(self, req: Request, m: Match[str]) -> Response:
        """Dream Machine's list, newest first, paged by limit and offset."""
        if denied := self._auth(req):
            return denied
        limit = int(req.query.get("limit", ["10"])[0])
        offset = int(req.query.get("offset", ["0"])[0])
        with self.lock:
            mine = [(i, j) for i, j in self.jobs.items() if j["api"] == LEGACY]
            page = list(reversed(mine))[offset:offset + limit]
            items = [self._generation(i, j, STATES[LEGACY][min(j["polls"], 3)]) for i, j in page]
        return Response(200, {"generations": items, "count": len(items),
                              "has_more": offset + limit < len(mine), "limit": limit,
                              "offset": offset})

    def file(self, req: Request, m: Match[str]) -> Response:
        job = self.jobs.get(m["id"])
        if job is None or job["fault"] == "gone":  # a presigned URL past its expiry
            return Response(410, body=b"<Error><Code>Gone</Code></Error>",
                            headers={"content-type": "application/xml"})
        data = self.clip_bytes(job["duration"])
        return Response(200, body=data, truncate=job["fault"] == "truncate")


def install_luma(server: VendorServer, clip_bytes: Callable[[int], bytes], **kw: Any) -> FakeLuma:
    """Teach ``server`` both Luma APIs; returns the fake to script faults and inspect."""
    fake = FakeLuma(server, clip_bytes, **kw)
    api = rf"(?P<api>{AGENTS}|{LEGACY})"
    server.route("POST", rf"(?P<api>{AGENTS})/generations")(fake.submit)
    server.route("POST", rf"(?P<api>{LEGACY})/generations/video")(fake.submit)
    server.route("GET", rf"{LEGACY}/generations")(fake.listing)
    server.route("GET", rf"{api}/generations/(?P<id>[0-9a-f-]+)")(fake.status)
    server.route("GET", r"/cdn/(?P<id>[0-9a-f-]+)\.mp4")(fake.file)
    return fake
