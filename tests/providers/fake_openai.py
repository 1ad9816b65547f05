"""A fake OpenAI-compatible ``/v1/videos`` endpoint, as gateways and resellers serve it.

``install_openai(server, clip_bytes, token=...)`` teaches a :class:`VendorServer` the wire
format and returns the :class:`OpenAIFake` holding the job state. A video is ``queued``
on submit, ``in_progress`` on the following polls and ``completed`` after
``polls_to_finish`` polls; its bytes are at ``GET /v1/videos/{id}/content``. ``GET
/v1/videos?order=desc&limit=&after=`` lists the videos newest first, as OpenAI's list does.

Misbehaviour is scripted per prompt word with :meth:`OpenAIFake.on`; each rule applies to
the next ``times`` submits whose prompt contains the word:

    429              refuse with 429 ``rate_limit_exceeded`` and Retry-After (no video)
    503              refuse with 503 ``server_error`` (no video)
    moderation       refuse the POST with 400 ``moderation_blocked`` (no video)
    moderation/poll  accept; the video then fails with error.code ``moderation_blocked``
    slow             create the video, answer only after ``delay`` seconds
    truncate         /content promises the whole file and sends half
    expired          /content answers 404 ``video_expired``

Errors use OpenAI's ``{"error": {"message", "type", "param", "code"}}`` shape. A wrong
key gets 401 ``invalid_api_key`` whose message echoes the key it got, so the tests can
prove the adapter scrubs secrets even from a gateway that repeats them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from re import Match
from typing import Any, ClassVar

from .vendor_server import Request, Response, ScriptedFaults, Submit, VendorServer

BLOCKED = "Your request was blocked by our moderation system."
FAULTS = ("429", "503", "moderation", "moderation/poll", "slow", "truncate", "expired")


def openai_error(status: int, code: str, message: str, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"error": {"message": message, "type": kind, "param": None,
                                       "code": code}}, headers=dict(headers or {}))


@dataclass
class Video:
    id: str
    model: str
    prompt: str
    seconds: str
    size: str
    fault: str | None = None
    polls: int = 0
    deleted: bool = False
    created_at: int = field(default_factory=lambda: int(time.time()))

    def state(self, polls_to_finish: int) -> dict[str, Any]:
        done = self.polls > polls_to_finish
        status = "queued" if self.polls == 0 else "in_progress"
        error = None
        if done:
            status = "failed" if self.fault == "moderation/poll" else "completed"
        if status == "failed":
            error = {"code": "moderation_blocked", "message": "The generated video was "
                     "flagged by our content policy and could not be delivered."}
        progress = 100 if done else min(90, 100 * self.polls // (polls_to_finish + 1))
        return {"id": self.id, "object": "video", "model": self.model, "status": status,
                "progress": progress, "created_at": self.created_at,
                "completed_at": 1764000150 if done else None,
                "expires_at": 1764086550 if done else None, "prompt": self.prompt,
                "seconds": self.seconds, "size": self.size, "remixed_from_video_id": None,
                "error": error}


@dataclass
class OpenAIFake(ScriptedFaults):
    faults: ClassVar[tuple[str, ...]] = FAULTS
    default_times: ClassVar[int] = 1

    server: VendorServer
    clip: Callable[[int], bytes]
    token: str
    polls_to_finish: int = 2
    videos: dict[str, Video] = field(default_factory=dict)
    clip_lock: threading.Lock = field(default_factory=threading.Lock)

    def bytes_of(self, seconds: int) -> bytes:
        # clip_bytes makes each length once but is not thread-safe, and the server is.
        with self.clip_lock:
            return self.clip(seconds)

    def _authorized(self, req: Request) -> Response | None:
        got = req.headers.get("authorization", "").removeprefix("Bearer ")
        if got == self.token:
            return None
        return openai_error(401, "invalid_api_key", f"Incorrect API key provided: {got}. "
                            "You can find your API key at https://platform.openai.com/account/"
                            "api-keys.")

    def _video(self, req: Request, m: Match[str]) -> Video | Response:
        if denied := self._authorized(req):
            return denied
        video = self.videos.get(m["id"])
        if video is None or video.deleted:
            return openai_error(404, "video_not_found", f"Video with id '{m['id']}' not found.")
        return video

    # -- routes

    def create(self, req: Request, m: Match[str]) -> Response:
        if denied := self._authorized(req):
            return denied
        body = req.json()
        video_id: str | None = None
        with self.lock:
            rule = self._take(body["prompt"])
            fault = rule.fault if rule else None
            if fault == "429" and rule:
                resp = openai_error(429, "rate_limit_exceeded", "Rate limit reached for "
                                    "videos per minute. Please try again later.", "requests",
                                    {"retry-after": f"{rule.retry_after:g}"})
            elif fault == "503":
                resp = openai_error(503, "server_error", "The server is overloaded or not "
                                    "ready yet.", "server_error")
            elif fault == "moderation":
                resp = openai_error(400, "moderation_blocked", BLOCKED)
            else:
                video = Video(f"video_{uuid.uuid4().hex}", body["model"], body["prompt"],
                              body["seconds"], body["size"], fault)
                self.videos[video.id] = video
                video_id = video.id
                resp = Response(200, video.state(self.polls_to_finish),
                                delay=rule.delay if fault == "slow" and rule else 0.0)
            self.submits.append(Submit(time.monotonic(), body["prompt"], resp.status, video_id,
                                       body))
        return resp

    def retrieve(self, req: Request, m: Match[str]) -> Response:
        video = self._video(req, m)
        if isinstance(video, Response):
            return video
        with self.lock:
            video.polls += 1
            return Response(200, video.state(self.polls_to_finish))

    def content(self, req: Request, m: Match[str]) -> Response:
        video = self._video(req, m)
        if isinstance(video, Response):
            return video
        if video.state(self.polls_to_finish)["status"] != "completed":
            return openai_error(409, "video_not_ready", "Video is not ready yet.")
        if video.fault == "expired":
            return openai_error(404, "video_expired", "The video content has expired.")
        return Response(200, body=self.bytes_of(int(video.seconds)), truncate=video.fault == "truncate")

    def listing(self, req: Request, m: Match[str]) -> Response:
        if denied := self._authorized(req):
            return denied
        limit = int(req.query.get("limit", ["20"])[0])
        after = req.query.get("after", [None])[0]
        with self.lock:
            videos = [v for v in self.videos.values() if not v.deleted]
        if req.query.get("order", ["desc"])[0] == "desc":
            videos.reverse()
        start = next((i + 1 for i, v in enumerate(videos) if v.id == after), 0)
        page = videos[start:start + limit]
        return Response(200, {"object": "list", "data": [v.state(self.polls_to_finish) for v in page],
                              "first_id": page[0].id if page else None,
                              "last_id": page[-1].id if page else None,
                              "has_more": start + limit < len(videos)})

    def delete(self, req: Request, m: Match[str]) -> Response:
        video = self._video(req, m)
        if isinstance(video, Response):
            return video
        video.deleted = True
        return Response(200, {"id": video.id, "object": "video.deleted", "deleted": True})


def install_openai(server: VendorServer, clip: Callable[[int], bytes], *, token: str,
                   polls_to_finish: int = 2) -> OpenAIFake:
    fake = OpenAIFake(server, clip, token, polls_to_finish)
    server.route("POST", r"/v1/videos")(fake.create)
    server.route("GET", r"/v1/videos")(fake.listing)
    server.route("GET", r"/v1/videos/(?P<id>[^/]+)")(fake.retrieve)
    server.route("GET", r"/v1/videos/(?P<id>[^/]+)/content")(fake.content)
    server.route("DELETE", r"/v1/videos/(?P<id>[^/]+)")(fake.delete)
    return fake
