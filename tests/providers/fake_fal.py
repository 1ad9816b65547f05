"""A fake fal.ai queue API on a :class:`VendorServer`, with scriptable faults.

``install_fal(server, clip_bytes)`` teaches the server fal's queue routes and returns the
:class:`FalFake` that keeps the jobs. A job moves IN_QUEUE -> IN_PROGRESS -> COMPLETED over
three status polls (``GET /platform/models/requests/by-endpoint`` lists them, with their
``json_input``, as fal's platform API does); its result points at a file on a separate
``/cdn/...`` path (fal serves files from its CDN host, not the queue host), which holds
``clip_bytes(duration)``.

Faults apply to submits whose prompt contains a word, for the first ``times`` of them::

    fake.on("storm", "429", retry_after=1)        429 + Retry-After, no job
    fake.on("storm", "503", times=3)               a burst of 503s, no job
    fake.on("storm", "moderation")                 accepted; fails with a content-policy error
    fake.on("storm", "fail")                       accepted; fails with a transient server error
    fake.on("storm", "slow", delay=2)              accepted, but the answer comes late
    fake.on("storm", "truncate")                   the file is cut short mid-transfer
    fake.on("storm", "expire")                     the file URL answers 410
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from .vendor_server import Request, Response, ScriptedFaults, Submit, VendorServer
from .wire_images import fal_problem

KEY = "fal-test-key-123456"
FAULTS = ("429", "503", "moderation", "fail", "slow", "truncate", "expire")
MODERATION = ("The content could not be processed because it contained material flagged by a "
              "content checker.")


@dataclass
class Job:
    id: str
    endpoint: str
    body: dict[str, Any]
    fault: str | None = None
    polls: int = 0
    cancelled: bool = False
    started: float = field(default_factory=time.time)


@dataclass
class FalFake(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS
    default_times: ClassVar[int] = 1

    server: VendorServer
    clip: Callable[[int], bytes]
    key: str = KEY
    jobs: dict[str, Job] = field(default_factory=dict)

    def _job_urls(self, job: Job) -> dict[str, str]:
        # fal's quirk: owner/alias only, the model sub-path is dropped.
        base = f"{self.server.url}/{'/'.join(job.endpoint.split('/')[:2])}/requests/{job.id}"
        return {"request_id": job.id, "gateway_request_id": job.id, "status_url": f"{base}/status",
                "response_url": base, "cancel_url": f"{base}/cancel"}

    # -- routes

    def submit(self, req: Request, endpoint: str) -> Response:
        body = req.json()
        prompt = str(body.get("prompt", ""))
        if (problem := fal_problem(endpoint, body)) is not None:
            with self.lock:
                self.submits.append(Submit(time.monotonic(), prompt, 422, None, body, endpoint,
                                           req.headers))
            return Response(422, {"detail": [{"loc": ["body", problem[0]], "msg": problem[1],
                                              "type": "value_error"}]})
        with self.lock:
            rule = self._take(prompt)
            kind = rule.fault if rule else None
            if rule and kind in ("429", "503"):
                self.submits.append(Submit(time.monotonic(), prompt, int(kind), None, body,
                                           endpoint, req.headers))
                if kind == "429":
                    return Response(429, {"detail": "Too many requests, slow down"},
                                    headers={"retry-after": f"{rule.retry_after:g}"})
                return Response(503, {"detail": "Service temporarily unavailable"})
            job = Job(str(uuid.uuid4()), endpoint, body, kind)
            self.jobs[job.id] = job
            self.submits.append(Submit(time.monotonic(), prompt, 200, job.id, body, endpoint,
                                       req.headers))
        return Response(200, self._job_urls(job), delay=rule.delay if rule and kind == "slow"
                        else 0.0)

    def history(self, req: Request) -> Response:
        """The platform API's request list for one endpoint since ``start``, one per page."""
        endpoint = req.query["endpoint_id"][0]
        since = datetime.fromisoformat(req.query["start"][0].replace("Z", "+00:00")).timestamp()
        cursor = int(req.query.get("cursor", ["0"])[0])
        with self.lock:
            mine = [j for j in self.jobs.values() if j.endpoint == endpoint and j.started >= since]
        items = [{"request_id": j.id, "endpoint_id": j.endpoint, "status": "success",
                  "json_input": j.body if "payloads" in req.query.get("expand", []) else None}
                 for j in mine[cursor:cursor + 1]]
        more = cursor + 1 < len(mine)
        return Response(200, {"items": items, "has_more": more,
                              "next_cursor": str(cursor + 1) if more else None})

    def status(self, job: Job) -> Response:
        job.polls += 1
        if job.polls == 1:
            return Response(200, {"status": "IN_QUEUE", "queue_position": 2,
                                  "response_url": self._job_urls(job)["response_url"]})
        if job.polls == 2:
            return Response(200, {"status": "IN_PROGRESS", "logs": None})
        answer: dict[str, Any] = {"status": "COMPLETED", "logs": None,
                                  "metrics": {"inference_time": 1.5}}
        if job.fault == "moderation":
            answer |= {"error": MODERATION, "error_type": "content_policy_violation"}
        if job.fault == "fail":
            answer |= {"error": "Internal server error", "error_type": "internal_server_error"}
        return Response(200, answer)

    def result(self, job: Job) -> Response:
        if job.polls < 3:
            return Response(400, {"detail": "Request is still in progress"})
        if job.fault == "fail":
            return Response(500, {"detail": "Internal server error"})
        if job.fault == "moderation":
            return Response(422, {"detail": [{"loc": ["body", "prompt"], "msg": MODERATION,
                                              "type": "content_policy_violation"}]})
        return Response(200, {"video": {"url": f"{self.server.url}/cdn/files/{job.id}/out.mp4",
                                        "content_type": "video/mp4"}, "seed": 42})

    def file(self, job: Job) -> Response:
        if job.fault == "expire":
            return Response(410, body=b"Gone", headers={"content-type": "text/plain"})
        seconds = int(str(job.body.get("duration", "5")).rstrip("s"))
        return Response(200, body=self.clip(seconds), truncate=job.fault == "truncate")


def install_fal(server: VendorServer, clip: Callable[[int], bytes], *, key: str = KEY) -> FalFake:
    """Teach ``server`` fal's queue API; returns the fake that holds the jobs and faults."""
    fake = FalFake(server, clip, key)

    def denied(req: Request) -> Response | None:
        if req.headers.get("authorization") == f"Key {fake.key}":
            return None
        # Echo what was sent, as some APIs do: the client must scrub it from its errors.
        return Response(401, {"detail": f"Invalid credentials: "
                                        f"{req.headers.get('authorization', '')!r}"})

    def authed(fn: Callable[[Job], Response]) -> Callable[[Request, Any], Response]:
        def handle(req: Request, m: Any) -> Response:
            if (refusal := denied(req)) is not None:
                return refusal
            job = fake.jobs.get(m["id"])
            return fn(job) if job else Response(404, {"detail": "Request not found"})
        return handle

    rx_id = r"/(?P<owner>[^/]+)/(?P<alias>[^/]+)/requests/(?P<id>[0-9a-f-]+)"
    server.route("GET", rx_id + "/status")(authed(fake.status))
    server.route("PUT", rx_id + "/cancel")(authed(_cancel))
    server.route("GET", rx_id)(authed(fake.result))

    @server.route("GET", r"/cdn/files/(?P<id>[0-9a-f-]+)/out\.mp4")
    def cdn(req: Request, m: Any) -> Response:
        job = fake.jobs.get(m["id"])
        return fake.file(job) if job else Response(404, body=b"no such file")

    server.route("GET", r"/platform/models/requests/by-endpoint")(
        lambda req, m: denied(req) or fake.history(req))

    def post(req: Request, m: Any) -> Response:
        return denied(req) or fake.submit(req, m["endpoint"])

    server.route("POST", r"/(?P<endpoint>.+)")(post)
    return fake


def _cancel(job: Job) -> Response:
    if job.polls >= 3:
        return Response(400, {"status": "ALREADY_COMPLETED"})
    job.cancelled = True
    return Response(202, {"status": "CANCELLATION_REQUESTED"})
