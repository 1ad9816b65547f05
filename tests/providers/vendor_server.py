"""A real local HTTP server that test code teaches to speak a vendor's wire format.

Each vendor's fake registers routes (method + path regex -> handler) on a
:class:`VendorServer`; the server records every request, so a test can assert what was
sent (fields, types, headers) and what was not (no call at all). It listens on
127.0.0.1 on a free port and stops by itself at the end of the test.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (to trigger client timeouts)
    truncate: bool = False  # promise the full length but send only half of the body


Handler = Callable[[Request, "re.Match[str]"], Response]


@dataclass
class Submit:
    """One submit a fake vendor received, whether it accepted it or not."""

    at: float
    prompt: str
    status: int
    job_id: str | None
    body: Any
    endpoint: str = ""  # the model or endpoint path it was posted to, where the URL names one
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Rule:
    word: str
    fault: str
    times: int
    retry_after: float = 1.0  # seconds a 429 asks the client to wait
    delay: float = 2.0  # seconds a slow answer comes late


@dataclass(kw_only=True)
class ScriptedFaults:
    """What the fakes share: faults scripted by a word of the prompt, and every submit.

    Shots are submitted concurrently and in no fixed order, so a fault names the shot by a
    word of its prompt (``fake.on("dips", "429")``) rather than by position.
    """

    faults: ClassVar[tuple[str, ...]] = ()
    default_times: ClassVar[int] = 1_000_000  # how many submits a rule hits unless told
    submits: list[Submit] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, word: str, fault: str, times: int | None = None, *,
           retry_after: float = 1.0, delay: float = 2.0) -> Self:
        assert fault in self.faults, fault
        self.rules.append(Rule(word, fault, self.default_times if times is None else times,
                               retry_after, delay))
        return self

    def accepted(self) -> list[Submit]:
        return [s for s in self.submits if s.job_id]

    def posts_for(self, word: str) -> list[Submit]:
        return [s for s in self.submits if word in s.prompt]

    def _take(self, prompt: str) -> Rule | None:
        """The first rule left for this prompt, used up once (the caller holds ``lock``)."""
        for rule in self.rules:
            if rule.word in prompt and rule.times > 0:
                rule.times -= 1
                return rule
        return None

    def _fault(self, prompt: str) -> str | None:
        rule = self._take(prompt)
        return rule.fault if rule else None


class VendorServer:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.routes.append((method, re.compile(pattern + r"$"), fn))
            return fn
        return register

    def calls(self, method: str | None = None, pattern: str = "") -> list[Request]:
        """The recorded requests, optionally filtered by method and path regex."""
        rx = re.compile(pattern)
        return [r for r in self.requests
                if (method is None or r.method == method) and rx.search(r.path)]

    def start(self) -> VendorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _dispatch(self, req: Request) -> Response:
        self.requests.append(req)
        for method, pattern, fn in self.routes:
            match = pattern.match(req.path)
            if method == req.method and match:
                return fn(req, match)
        return Response(404, {"error": f"no route for {req.method} {req.path}"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                req = Request(self.command, parts.path, parse_qs(parts.query),
                              {k.lower(): v for k, v in self.headers.items()},
                              self.rfile.read(length) if length else b"")
                resp = server._dispatch(req)
                if resp.delay:
                    time.sleep(resp.delay)
                body = json.dumps(resp.json).encode() if resp.json is not None else resp.body
                self.send_response(resp.status)
                content_type = "application/json" if resp.json is not None else "video/mp4"
                self.send_header("content-type", resp.headers.pop("content-type", content_type))
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body[: len(body) // 2] if resp.truncate else body)
                    if resp.truncate:
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        return _Handler


@pytest.fixture
def vendor_server() -> Iterator[VendorServer]:
    server = VendorServer().start()
    try:
        yield server
    finally:
        server.stop()
