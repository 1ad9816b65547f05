"""A fake Runway task API on a :class:`VendorServer`: tasks, a CDN path, scripted faults.

Wire shapes follow runwayml/sdk-python and docs.dev.runwayml.com: ``POST
/v1/text_to_video`` and ``/v1/image_to_video`` answer ``{"id"}``; ``GET /v1/tasks/{id}``
goes ``THROTTLED`` (the happy path is over the concurrency limit at first, as on a
tier-1 account) -> ``PENDING`` -> ``RUNNING`` (``progress``) -> ``SUCCEEDED`` with
``output: [url]``; a moderated task ends ``FAILED`` with ``failure`` and a ``SAFETY.*``
``failureCode``. Requests without ``X-Runway-Version`` get a 400, as from Runway. Files
come from ``http://localhost:PORT/cdn/...``, another host than the API's ``127.0.0.1``
for the client, like Runway's CloudFront URLs.

Faults are scripted per prompt word (``fake.on("dips", "429")``), since shots are
submitted concurrently.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from re import Match
from typing import Any, ClassVar

from .vendor_server import Request, Response, ScriptedFaults, Submit, VendorServer
from .wire_images import runway_problem

KEY = "rw-test-key-123456"
VERSION = "2024-11-06"
# Submit faults: 429 (Retry-After), 503, refused (400 naming the content policy), slow
# (answers late); task faults: moderation (FAILED SAFETY.INPUT.TEXT), internal (FAILED
# INTERNAL.BAD_OUTPUT.CODE01), truncate (half a file), gone (the file URL answers 403).
FAULTS = ("429", "503", "refused", "slow", "moderation", "internal", "truncate", "gone")
# What the happy path answers to successive polls; the last one repeats.
STATES = ("THROTTLED", "THROTTLED", "PENDING", "RUNNING", "SUCCEEDED")
MODERATION_TEXT = "Your prompt was flagged by our content moderation system."


@dataclass
class FakeRunway(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS

    server: VendorServer
    clip_bytes: Callable[[int], bytes]
    key: str = KEY
    retry_after: float = 1.0
    slow_seconds: float = 2.0
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)  # every status answered, in order
    deleted: list[str] = field(default_factory=list)

    def _check(self, req: Request) -> Response | None:
        if req.headers.get("authorization", "") != f"Bearer {self.key}":
            return Response(401, {"error": "Incorrect or missing API key"})
        if req.headers.get("x-runway-version") != VERSION:
            return Response(400, {"error": "The X-Runway-Version header is missing or invalid. "
                                           f"Use {VERSION}."})
        return None

    def submit(self, req: Request, _: Match[str]) -> Response:
        if denied := self._check(req):
            return denied
        body = req.json()
        prompt = str(body.get("promptText", ""))
        if (problem := runway_problem(req.path, body)) is not None:
            with self.lock:
                self.submits.append(Submit(time.monotonic(), prompt, 400, None, body))
            return Response(400, {"error": problem})
        with self.lock:
            fault = self._fault(prompt)
            refused = {
                "429": Response(429, {"error": "You have exceeded your daily generation limit"},
                                headers={"retry-after": f"{self.retry_after:g}"}),
                "503": Response(503, {"error": "Service temporarily unavailable"}),
                "refused": Response(400, {"error": "Prompt rejected by the content policy: "
                                                   "depictions of graphic violence"}),
            }.get(fault or "")
            if refused is not None:
                self.submits.append(Submit(time.monotonic(), prompt, refused.status, None, body))
                return refused
            task_id = str(uuid.uuid4())
            self.tasks[task_id] = {"polls": 0, "fault": fault, "duration": int(body["duration"])}
            self.submits.append(Submit(time.monotonic(), prompt, 200, task_id, body))
        if fault == "slow":  # the task exists, but the answer comes after the client gave up
            return Response(200, {"id": task_id}, delay=self.slow_seconds,
                            headers={"connection": "close"})
        return Response(200, {"id": task_id})

    def status(self, req: Request, m: Match[str]) -> Response:
        if denied := self._check(req):
            return denied
        with self.lock:
            task = self.tasks.get(m["id"])
            if task is None:
                return Response(404, {"error": "Task not found"})
            state = "CANCELLED" if m["id"] in self.deleted else \
                STATES[min(task["polls"], len(STATES) - 1)]
            task["polls"] += 1
            self.served.append(state)
        answer: dict[str, Any] = {"id": m["id"], "createdAt": "2026-11-24T12:00:00.000Z",
                                  "status": state}
        if state == "RUNNING":
            answer["progress"] = 0.5
        if state == "SUCCEEDED" and task["fault"] == "moderation":
            answer.update(status="FAILED", failure=MODERATION_TEXT,
                          failureCode="SAFETY.INPUT.TEXT")
        elif state == "SUCCEEDED" and task["fault"] == "internal":
            answer.update(status="FAILED", failure="An unexpected error occurred.",
                          failureCode="INTERNAL.BAD_OUTPUT.CODE01")
        elif state == "SUCCEEDED":
            port = self.server.url.rsplit(":", 1)[1]
            answer["output"] = [f"http://localhost:{port}/cdn/{m['id']}.mp4?_jwt=signed"]
        return Response(200, answer)

    def delete(self, req: Request, m: Match[str]) -> Response:
        if denied := self._check(req):
            return denied
        self.deleted.append(m["id"])
        return Response(204)

    def file(self, req: Request, m: Match[str]) -> Response:
        task = self.tasks.get(m["id"])
        if task is None or task["fault"] == "gone":  # signed CDN URLs answer 403 once expired
            return Response(403, body=b"<Error><Code>AccessDenied</Code>"
                                      b"<Message>Request has expired</Message></Error>",
                            headers={"content-type": "application/xml"})
        data = self.clip_bytes(task["duration"])
        return Response(200, body=data, truncate=task["fault"] == "truncate")


def install_runway(server: VendorServer, clip_bytes: Callable[[int], bytes],
                   **kw: Any) -> FakeRunway:
    """Teach ``server`` Runway's task API; returns the fake to script faults and inspect."""
    fake = FakeRunway(server, clip_bytes, **kw)
    server.route("POST", r"/v1/(text|image)_to_video")(fake.submit)
    server.route("GET", r"/v1/tasks/(?P<id>[0-9a-f-]+)")(fake.status)
    server.route("DELETE", r"/v1/tasks/(?P<id>[0-9a-f-]+)")(fake.delete)
    server.route("GET", r"/cdn/(?P<id>[0-9a-f-]+)\.mp4")(fake.file)
    return fake
