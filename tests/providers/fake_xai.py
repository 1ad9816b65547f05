"""A fake xAI video API on a :class:`VendorServer`: jobs, a CDN path, scripted faults.

Wire shapes follow docs.x.ai (as mirrored by third parties): ``POST /v1/videos/generations``
answers ``{"request_id"}``; ``GET /v1/videos/{id}`` answers ``{"status": "pending"}`` until
``done`` with ``video.url``; errors are ``{"code": ..., "error": ...}``. Files are served
from ``http://localhost:PORT/cdn/...``: another host than the API's ``127.0.0.1`` as far as
the client can tell, as with xAI's CDN, so the key must not be sent there.

Faults are scripted per prompt word (``fake.on("dips", "429")``) since shots are submitted
concurrently and their order is not fixed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from re import Match
from typing import Any, ClassVar

from .vendor_server import Request, Response, ScriptedFaults, Submit, VendorServer

KEY = "xai-test-key-123456"
# Submit faults: 429 (Retry-After), 503, moderation (400), slow (answers late), and job
# faults: truncate (half a file), gone (the file URL answers 403), expire, blocked.
FAULTS = ("429", "503", "moderation", "slow", "truncate", "gone", "expire", "blocked")


@dataclass
class FakeXai(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS

    server: VendorServer
    clip_bytes: Callable[[int], bytes]
    key: str = KEY
    polls_to_done: int = 2  # pending answers before done
    retry_after: float = 1.0
    slow_seconds: float = 2.0
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _auth(self, req: Request) -> Response | None:
        sent = req.headers.get("authorization", "")
        if sent == f"Bearer {self.key}":
            return None
        # xAI echoes the key it got; the client must scrub it from its messages.
        return Response(401, {"code": "Client specified an invalid argument",
                              "error": f"Incorrect API key provided: {sent[7:]}. You can "
                                       "obtain an API key from https://console.x.ai."})

    def submit(self, req: Request, _: Match[str]) -> Response:
        if denied := self._auth(req):
            return denied
        body = req.json()
        prompt = str(body.get("prompt", ""))
        with self.lock:
            fault = self._fault(prompt)
            refused = {
                "429": Response(429, {"code": "rate_limit_exceeded",
                                      "error": "Too many requests: 60 per minute per key"},
                                headers={"retry-after": f"{self.retry_after:g}"}),
                "503": Response(503, {"code": "internal_error",
                                      "error": "The service is temporarily overloaded"}),
                "moderation": Response(400, {"code": "content_policy_violation",
                                             "error": "Prompt rejected: it violates the "
                                                      "content policy (graphic violence)"}),
            }.get(fault or "")
            if refused is not None:
                self.submits.append(Submit(time.monotonic(), prompt, refused.status, None, body))
                return refused
            job_id = str(uuid.uuid4())
            self.jobs[job_id] = {"polls": 0, "fault": fault, "duration": int(body["duration"]),
                                 "model": body["model"]}
            self.submits.append(Submit(time.monotonic(), prompt, 200, job_id, body))
        if fault == "slow":  # the job exists, but the answer comes after the client gave up
            return Response(200, {"request_id": job_id}, delay=self.slow_seconds,
                            headers={"connection": "close"})
        return Response(200, {"request_id": job_id})

    def status(self, req: Request, m: Match[str]) -> Response:
        if denied := self._auth(req):
            return denied
        with self.lock:
            job = self.jobs.get(m["id"])
            if job is None:
                return Response(404, {"code": "not_found", "error": f"no request {m['id']}"})
            job["polls"] += 1
            if job["polls"] <= self.polls_to_done:
                return Response(200, {"status": "pending", "model": job["model"]})
        if job["fault"] == "expire":
            return Response(200, {"status": "expired", "model": job["model"]})
        port = self.server.url.rsplit(":", 1)[1]
        return Response(200, {"status": "done", "model": job["model"], "video": {
            "url": f"http://localhost:{port}/cdn/{m['id']}.mp4", "duration": job["duration"],
            "respect_moderation": job["fault"] != "blocked"}})

    def file(self, req: Request, m: Match[str]) -> Response:
        job = self.jobs.get(m["id"])
        if job is None or job["fault"] == "gone":  # signed CDN URLs answer 403 once expired
            return Response(403, body=b"<Error><Code>AccessDenied</Code>"
                                      b"<Message>Request has expired</Message></Error>",
                            headers={"content-type": "application/xml"})
        data = self.clip_bytes(job["duration"])
        return Response(200, body=data, truncate=job["fault"] == "truncate")


def install_xai(server: VendorServer, clip_bytes: Callable[[int], bytes], **kw: Any) -> FakeXai:
    """Teach ``server`` the xAI video API; returns the fake to script faults and inspect."""
    fake = FakeXai(server, clip_bytes, **kw)
    server.route("POST", r"/v1/videos/generations")(fake.submit)
    server.route("GET", r"/v1/videos/(?P<id>[0-9a-f-]+)")(fake.status)
    server.route("GET", r"/cdn/(?P<id>[0-9a-f-]+)\.mp4")(fake.file)
    return fake
