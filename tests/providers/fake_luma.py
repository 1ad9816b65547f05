"""A fake Luma API on a :class:`VendorServer`: both APIs, a CDN path, scripted faults.

The Agents API (Ray 3.2) is served under ``/v1`` and the legacy Dream Machine API (Ray 2)
under ``/dream-machine/v1``, as on Luma's two hosts; tests point
``SHOTLINE_LUMA_BASE_URL`` and ``SHOTLINE_LUMA_LEGACY_BASE_URL`` at them. Both answer a
submit with the generation object (``{"id", "state": "queued", ...}``); ``GET
/generations/{id}`` goes ``queued`` -> ``dreaming`` -> ``completed`` with
``assets.video``, or ``failed`` with ``failure_reason``. Errors are ``{"detail": ...}``.
Files come from ``http://localhost:PORT/cdn/...``: another host for the client, like
Luma's presigned storage URLs, so the key must not be sent there.

Faults are scripted per prompt word (``fake.on("dips", "429")``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
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
STATES = ("queued", "dreaming", "dreaming", "completed")
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
        video = f"http://localhost:{port}/cdn/{job_id}.mp4?X-Amz-Signature=x" \
            if state == "completed" else None
        return {"id": job_id, "state": state, "model": job["model"], "failure_reason": None,
                "assets": {"video": video}, "created_at": "2026-11-24T12:00:00.000Z"}

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
            job = {"polls": 0, "fault": fault, "api": m["api"], "model": body["model"],
                   "duration": int(str(nested["duration"]).rstrip("s"))}
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
            state = STATES[min(job["polls"], len(STATES) - 1)]
            job["polls"] += 1
            self.served.append(state)
        answer = self._generation(m["id"], job, state)
        if state == "completed" and job["fault"] in ("moderation", "fail"):
            reason = FAILED_MODERATION if job["fault"] == "moderation" else \
                "Job failed due to an internal error, please try again"
            answer.update(state="failed", failure_reason=reason, assets={"video": None})
        return Response(200, answer)

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
    server.route("POST", rf"{api}/generations")(fake.submit)
    server.route("GET", rf"{api}/generations/(?P<id>[0-9a-f-]+)")(fake.status)
    server.route("GET", r"/cdn/(?P<id>[0-9a-f-]+)\.mp4")(fake.file)
    return fake
