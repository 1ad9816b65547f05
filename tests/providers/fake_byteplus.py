"""A fake BytePlus ModelArk task API on a :class:`VendorServer`: tasks, a TOS path, faults.

Wire shapes follow the ModelArk docs (as mirrored by third parties): ``POST
/api/v3/contents/generations/tasks`` answers ``{"id": "cgt-..."}``; ``GET .../tasks/{id}``
goes ``queued`` -> ``running`` -> ``succeeded`` with ``content.video_url`` and token
``usage``; errors are ``{"error": {"code", "message", "param", "type"}}`` with the codes of
ModelArk's error-code page. Files are served from ``http://localhost:PORT/tos/...``, another
host than the API's ``127.0.0.1`` for the client, as with BytePlus's object storage.

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
from .wire_images import byteplus_problem

KEY = "ark-test-key-123456"
TASKS = "/api/v3/contents/generations/tasks"
# Submit faults: 429 (Retry-After), 503, moderation (400), slow (answers late); task
# faults: truncate, gone (file URL answers 403), expire, blocked (output moderation), fail.
FAULTS = ("429", "503", "moderation", "slow", "truncate", "gone", "expire", "blocked", "fail")


def error(status: int, code: str, message: str, kind: str) -> Response:
    request_id = uuid.uuid4().hex[:20]
    return Response(status, {"error": {"code": code, "message": f"{message} Request id: "
                                       f"{request_id}", "param": "", "type": kind}})


@dataclass
class FakeBytePlus(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS

    server: VendorServer
    clip_bytes: Callable[[int], bytes]
    key: str = KEY
    retry_after: float = 1.0
    slow_seconds: float = 2.0
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _auth(self, req: Request) -> Response | None:
        if req.headers.get("authorization") == f"Bearer {self.key}":
            return None
        return error(401, "AuthenticationError", "The API key or AK/SK in the request is "
                     "missing or invalid.", "Unauthorized")

    def submit(self, req: Request, _: Match[str]) -> Response:
        if denied := self._auth(req):
            return denied
        body = req.json()
        prompt = str(body["content"][0]["text"])
        if (problem := byteplus_problem(body)) is not None:
            with self.lock:
                self.submits.append(Submit(time.monotonic(), prompt, 400, None, body))
            return error(400, "InvalidParameter", problem, "BadRequest")
        with self.lock:
            fault = self._fault(prompt)
            refused = {
                "429": error(429, "AccountRateLimitExceeded", "The request has exceeded the "
                             "account rate limit.", "TooManyRequests"),
                "503": error(503, "ServiceUnavailable", "The service is temporarily "
                             "unavailable.", "ServiceUnavailable"),
                "moderation": error(400, "InputTextSensitiveContentDetected", "The request "
                                    "failed because the input text may contain sensitive "
                                    "information.", "BadRequest"),
            }.get(fault or "")
            if refused is not None:
                if fault == "429":
                    refused.headers["retry-after"] = f"{self.retry_after:g}"
                self.submits.append(Submit(time.monotonic(), prompt, refused.status, None, body))
                return refused
            job_id = f"cgt-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:5]}"
            self.jobs[job_id] = {"polls": 0, "fault": fault, "body": body, "cancelled": False}
            self.submits.append(Submit(time.monotonic(), prompt, 200, job_id, body))
        if fault == "slow":  # the task exists, but the answer comes after the client gave up
            return Response(200, {"id": job_id}, delay=self.slow_seconds,
                            headers={"connection": "close"})
        return Response(200, {"id": job_id})

    def _state(self, job: dict[str, Any]) -> str:
        if job["cancelled"]:
            return "cancelled"
        if job["polls"] <= 1:
            return "queued"
        if job["polls"] == 2:
            return "running"
        return {"expire": "expired", "blocked": "failed", "fail": "failed"}.get(
            job["fault"] or "", "succeeded")

    def task(self, req: Request, m: Match[str]) -> Response:
        if denied := self._auth(req):
            return denied
        with self.lock:
            job = self.jobs.get(m["id"])
            if job is None:
                return error(404, "ResourceNotFound", f"The task {m['id']} was not found.",
                             "NotFound")
            job["polls"] += 1
            state = self._state(job)
        body = job["body"]
        answer: dict[str, Any] = {
            "id": m["id"], "model": body["model"], "status": state, "created_at": 1764000000,
            "updated_at": 1764000060, "duration": body["duration"], "ratio": body["ratio"],
            "resolution": body["resolution"], "framespersecond": 24, "seed": 12345}
        if state == "succeeded":
            port = self.server.url.rsplit(":", 1)[1]
            answer["content"] = {"video_url": f"http://localhost:{port}/tos/{m['id']}.mp4"}
            answer["usage"] = {"completion_tokens": 108900, "total_tokens": 108900}
        elif state == "failed":
            answer["error"] = ({"code": "OutputVideoSensitiveContentDetected", "message":
                                "The request failed because the output video may contain "
                                "sensitive information."} if job["fault"] == "blocked" else
                               {"code": "InternalServiceError", "message": "The service "
                                "encountered an unexpected internal error."})
        return Response(200, answer)

    def delete(self, req: Request, m: Match[str]) -> Response:
        if denied := self._auth(req):
            return denied
        with self.lock:
            job = self.jobs.get(m["id"])
            if job is None:
                return error(404, "ResourceNotFound", "The task was not found.", "NotFound")
            if self._state(job) == "running":
                return error(400, "InvalidAction", "A running task cannot be cancelled.",
                             "BadRequest")
            job["cancelled"] = True
        return Response(200, {})

    def file(self, req: Request, m: Match[str]) -> Response:
        job = self.jobs.get(m["id"])
        if job is None or job["fault"] == "gone":  # presigned TOS URLs answer 403 once expired
            return Response(403, body=b"<Error><Code>AccessDenied</Code>"
                                      b"<Message>Request has expired</Message></Error>",
                            headers={"content-type": "application/xml"})
        data = self.clip_bytes(int(job["body"]["duration"]))
        return Response(200, body=data, truncate=job["fault"] == "truncate")


def install_byteplus(server: VendorServer, clip_bytes: Callable[[int], bytes],
                     **kw: Any) -> FakeBytePlus:
    """Teach ``server`` the ModelArk task API; returns the fake to script faults and inspect."""
    fake = FakeBytePlus(server, clip_bytes, **kw)
    server.route("POST", TASKS)(fake.submit)
    server.route("GET", TASKS + r"/(?P<id>cgt-[0-9a-z-]+)")(fake.task)
    server.route("DELETE", TASKS + r"/(?P<id>cgt-[0-9a-z-]+)")(fake.delete)
    server.route("GET", r"/tos/(?P<id>cgt-[0-9a-z-]+)\.mp4")(fake.file)
    return fake
