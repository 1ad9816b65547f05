"""A fake Replicate predictions API on a :class:`VendorServer`, with scriptable faults.

``install_replicate(server, clip_bytes)`` teaches the server Replicate's routes and returns
the :class:`ReplicateFake` that keeps the predictions. A prediction moves starting ->
processing -> succeeded over three polls; its ``output`` is a URL on a separate
``/delivery/...`` path (Replicate serves files from replicate.delivery), holding
``clip_bytes(duration)``. With ``output_list=True`` the output is a one-element list.
``GET /v1/predictions`` lists them newest first, ``page`` at a time, with a ``next`` cursor
URL (as Replicate's list does).

Faults apply to submits whose prompt contains a word, for the first ``times`` of them::

    fake.on("storm", "429", retry_after=1)     429 + Retry-After (Replicate's throttle body)
    fake.on("storm", "503", times=3)            a burst of 503s, no prediction
    fake.on("storm", "moderation")              created; then fails with E005 "flagged as sensitive"
    fake.on("storm", "fail")                    created; then fails with a transient error
    fake.on("storm", "slow", delay=2)           created, but the answer comes late
    fake.on("storm", "truncate")                the output file is cut short mid-transfer
    fake.on("storm", "expire")                  the output URL answers 403 (expired delivery)
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from .vendor_server import Request, Response, ScriptedFaults, Submit, VendorServer

TOKEN = "r8_test-token-123456"
FAULTS = ("429", "503", "moderation", "fail", "slow", "truncate", "expire")
TRANSIENT = "CUDA out of memory. Tried to allocate 2.00 GiB (E1001)"
MODERATION = ("The input or output was flagged as sensitive. Please try again with different "
              "inputs. (E005)")


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    fault: str | None = None
    polls: int = 0
    canceled: bool = False
    created_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"))


@dataclass
class ReplicateFake(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS
    default_times: ClassVar[int] = 1

    server: VendorServer
    clip: Callable[[int], bytes]
    token: str = TOKEN
    output_list: bool = False
    predictions: dict[str, Prediction] = field(default_factory=dict)

    def view(self, p: Prediction) -> dict[str, Any]:
        """The prediction object as Replicate shows it at this point of its life."""
        api = f"{self.server.url}/v1/predictions/{p.id}"
        status = ("canceled" if p.canceled else "starting" if p.polls <= 1
                  else "processing" if p.polls == 2
                  else "failed" if p.fault in ("moderation", "fail") else "succeeded")
        out: Any = None
        if status == "succeeded":
            url = f"{self.server.url}/delivery/xezq/{p.id}/output.mp4"
            out = [url] if self.output_list else url
        return {"id": p.id, "model": p.model, "version": "hidden", "input": p.input,
                "status": status, "output": out, "logs": "",
                "error": None if status != "failed" else
                MODERATION if p.fault == "moderation" else TRANSIENT,
                "urls": {"get": api, "cancel": f"{api}/cancel", "stream": None},
                "metrics": {"predict_time": 97.1} if status == "succeeded" else {},
                "created_at": p.created_at}

    # -- routes

    def create(self, req: Request, model: str) -> Response:
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return Response(422, {"title": "Input validation failed", "status": 422,
                                  "detail": "input: input is required"})
        prompt = str(body["input"].get("prompt", ""))
        with self.lock:
            rule = self._take(prompt)
            kind = rule.fault if rule else None
            if rule and kind in ("429", "503"):
                self.submits.append(Submit(time.monotonic(), prompt, int(kind), None, body,
                                           model, req.headers))
                if kind == "429":
                    return Response(429, {"title": "Request was throttled.", "status": 429,
                                          "detail": "Request was throttled. Your rate limit "
                                                    "resets in ~1s."},
                                    headers={"retry-after": f"{rule.retry_after:g}"})
                return Response(503, {"title": "Service Unavailable", "status": 503,
                                      "detail": "Replicate is temporarily unavailable"})
            p = Prediction(secrets.token_hex(13), model, body["input"], kind)
            self.predictions[p.id] = p
            self.submits.append(Submit(time.monotonic(), prompt, 201, p.id, body, model,
                                       req.headers))
        return Response(201, self.view(p), delay=rule.delay if rule and kind == "slow" else 0.0)

    def listing(self, req: Request, page: int = 2) -> Response:
        """Newest first, ``page`` predictions per answer, and a cursor to the next ones."""
        start = int(req.query.get("cursor", ["0"])[0])
        with self.lock:
            newest = list(reversed(self.predictions.values()))
        more = start + page < len(newest)
        return Response(200, {
            "previous": None, "results": [self.view(p) for p in newest[start:start + page]],
            "next": f"{self.server.url}/v1/predictions?cursor={start + page}" if more else None})

    def get(self, p: Prediction) -> Response:
        p.polls += 1
        return Response(200, self.view(p))

    def cancel(self, p: Prediction) -> Response:
        if p.polls < 3:
            p.canceled = True
        return Response(200, self.view(p))

    def file(self, p: Prediction) -> Response:
        if p.fault == "expire":
            return Response(403, body=b"<Error>Request has expired</Error>",
                            headers={"content-type": "application/xml"})
        seconds = int(p.input.get("duration", 5))
        return Response(200, body=self.clip(seconds), truncate=p.fault == "truncate")


def install_replicate(server: VendorServer, clip: Callable[[int], bytes], *, token: str = TOKEN,
                      output_list: bool = False) -> ReplicateFake:
    """Teach ``server`` Replicate's predictions API; returns the fake holding the predictions."""
    fake = ReplicateFake(server, clip, token, output_list)

    def denied(req: Request) -> Response | None:
        if req.headers.get("authorization") == f"Bearer {fake.token}":
            return None
        # Echo what was sent, as some APIs do: the client must scrub it from its errors.
        return Response(401, {"title": "Unauthenticated", "status": 401,
                              "detail": "You did not pass a valid authentication token: "
                                        f"{req.headers.get('authorization', '')!r}"})

    def authed(fn: Callable[[Prediction], Response]) -> Callable[[Request, Any], Response]:
        def handle(req: Request, m: Any) -> Response:
            if (refusal := denied(req)) is not None:
                return refusal
            p = fake.predictions.get(m["id"])
            return fn(p) if p else Response(404, {"title": "Not found", "status": 404,
                                                  "detail": "Not found."})
        return handle

    server.route("GET", r"/v1/predictions/(?P<id>[0-9a-z]+)")(authed(fake.get))
    server.route("GET", r"/v1/predictions")(lambda req, m: denied(req) or fake.listing(req))
    server.route("POST", r"/v1/predictions/(?P<id>[0-9a-z]+)/cancel")(authed(fake.cancel))

    @server.route("POST", r"/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions")
    def create(req: Request, m: Any) -> Response:
        return denied(req) or fake.create(req, f"{m['owner']}/{m['name']}")

    @server.route("GET", r"/delivery/xezq/(?P<id>[0-9a-z]+)/output\.mp4")
    def delivery(req: Request, m: Any) -> Response:
        p = fake.predictions.get(m["id"])
        return fake.file(p) if p else Response(404, body=b"no such file")

    return fake
