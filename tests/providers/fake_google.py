"""A fake Vertex AI Veo endpoint (predictLongRunning / fetchPredictOperation) plus GCS.

``install_google(server, clip_bytes, ...)`` teaches a :class:`VendorServer` the wire format
and returns the :class:`GoogleFake` holding the job state. An operation is ``done: false``
for ``polls_to_finish`` polls, then done with ``response.videos[0]`` holding either
``bytesBase64Encoded`` or a ``gcsUri`` served by the fake GCS JSON API route.

Misbehaviour is scripted per prompt word with :meth:`GoogleFake.on`; each rule applies to
the next ``times`` submits whose prompt contains the word:

    429        refuse with 429 RESOURCE_EXHAUSTED and Retry-After (no operation)
    503        refuse with 503 UNAVAILABLE (no operation)
    slow       create the operation, answer only after ``delay`` seconds
    moderation create the operation; it finishes with the video filtered out
               (raiMediaFilteredCount/raiMediaFilteredReasons, no videos)
    truncate   the download promises the whole file and sends half
    expired    the GCS object answers 404 (it was deleted by a lifecycle rule)

Error bodies use Google's ``{"error": {"code", "message", "status"}}`` shape. A wrong
bearer token gets 401, whose message echoes the token it got (so the tests can prove the
adapter scrubs secrets even from a vendor that repeats them).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from re import Match
from typing import Any, ClassVar
from urllib.parse import unquote

from .vendor_server import Request, Response, ScriptedFaults, Submit, VendorServer
from .wire_images import google_problem

MODEL_PATH = r"/v1/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/publishers/google/models/(?P<m>[^/:]+)"
BUCKET = "fake-veo-out"
FAULTS = ("429", "503", "slow", "moderation", "truncate", "expired")
FILTER_REASON = ("Veo could not generate videos because the input prompt violates Vertex AI's "
                 "usage guidelines. Support codes: 58061214")


def google_error(code: int, status: str, message: str, headers: dict[str, str] | None = None
                 ) -> Response:
    return Response(code, {"error": {"code": code, "message": message, "status": status}},
                    headers=dict(headers or {}))


@dataclass
class Job:
    name: str
    seconds: int
    prompt: str
    fault: str | None = None
    polls: int = 0


@dataclass
class GoogleFake(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS
    default_times: ClassVar[int] = 1

    server: VendorServer
    clip: Callable[[int], bytes]
    token: str
    answer: str = "base64"  # or "gcs"
    polls_to_finish: int = 2
    jobs: dict[str, Job] = field(default_factory=dict)
    clip_lock: threading.Lock = field(default_factory=threading.Lock)

    def bytes_of(self, seconds: int) -> bytes:
        # clip_bytes makes each length once but is not thread-safe, and the server is.
        with self.clip_lock:
            return self.clip(seconds)

    def _authorized(self, req: Request) -> Response | None:
        got = req.headers.get("authorization", "")
        if got == f"Bearer {self.token}":
            return None
        return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication "
                            f"credentials: {got!r}. Expected OAuth 2 access token.")

    # -- routes

    def predict(self, req: Request, m: Match[str]) -> Response:
        if denied := self._authorized(req):
            return denied
        body = req.json()
        prompt = body["instances"][0]["prompt"]
        if (problem := google_problem(body)) is not None:
            with self.lock:
                self.submits.append(Submit(time.monotonic(), prompt, 400, None, body))
            return google_error(400, "INVALID_ARGUMENT", problem)
        name: str | None = None
        with self.lock:
            rule = self._take(prompt)
            fault = rule.fault if rule else None
            if fault == "429":
                resp = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for "
                                    "aiplatform.googleapis.com/online_prediction_requests_per_"
                                    "base_model", {"retry-after": f"{rule.retry_after:g}"}
                                    if rule else None)
            elif fault == "503":
                resp = google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
            else:
                name = f"projects/{m['p']}/locations/{m['l']}/publishers/google/models/" \
                       f"{m['m']}/operations/{uuid.uuid4()}"
                self.jobs[name] = Job(name, int(body["parameters"]["durationSeconds"]), prompt,
                                      fault)
                resp = Response(200, {"name": name}, delay=rule.delay if fault == "slow" and rule
                                else 0.0)
            self.submits.append(Submit(time.monotonic(), prompt, resp.status, name, body))
        return resp

    def fetch_operation(self, req: Request, m: Match[str]) -> Response:
        if denied := self._authorized(req):
            return denied
        name = req.json().get("operationName", "")
        job = self.jobs.get(name)
        if job is None:
            return google_error(404, "NOT_FOUND", f"Operation {name} not found.")
        with self.lock:
            job.polls += 1
            done = job.polls > self.polls_to_finish
        if not done:
            return Response(200, {"name": name, "done": False})
        if job.fault == "moderation":
            response: dict[str, Any] = {"@type": "type.googleapis.com/cloud.ai.large_models"
                                        ".vision.GenerateVideoResponse",
                                        "raiMediaFilteredCount": 1,
                                        "raiMediaFilteredReasons": [FILTER_REASON]}
        else:
            video: dict[str, str] = {"mimeType": "video/mp4"}
            if self.answer == "gcs":
                video["gcsUri"] = f"gs://{BUCKET}/veo/{name.rsplit('/', 1)[1]}/sample_0.mp4"
            else:
                data = self.bytes_of(job.seconds)
                if job.fault == "truncate":
                    data = data[: len(data) // 2]
                video["bytesBase64Encoded"] = base64.b64encode(data).decode()
            response = {"raiMediaFilteredCount": 0, "videos": [video]}
        return Response(200, {"name": name, "done": True, "response": response})

    def storage(self, req: Request, m: Match[str]) -> Response:
        if denied := self._authorized(req):
            return denied
        obj = unquote(m["obj"])
        job = next((j for j in self.jobs.values() if j.name.rsplit("/", 1)[1] in obj), None)
        if req.query.get("alt") != ["media"] or m["bucket"] != BUCKET or job is None:
            return google_error(404, "NOT_FOUND", f"No such object: {m['bucket']}/{obj}")
        if job.fault == "expired":
            return google_error(404, "NOT_FOUND", f"No such object: {m['bucket']}/{obj}")
        return Response(200, body=self.bytes_of(job.seconds), truncate=job.fault == "truncate")


def install_google(server: VendorServer, clip: Callable[[int], bytes], *, token: str,
                   answer: str = "base64", polls_to_finish: int = 2) -> GoogleFake:
    fake = GoogleFake(server, clip, token, answer, polls_to_finish)
    server.route("POST", MODEL_PATH + ":predictLongRunning")(fake.predict)
    server.route("POST", MODEL_PATH + ":fetchPredictOperation")(fake.fetch_operation)
    server.route("GET", r"/storage/v1/b/(?P<bucket>[^/]+)/o/(?P<obj>[^/]+)")(fake.storage)
    return fake
