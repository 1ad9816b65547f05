"""A real shotline server on a real socket, API clients for it, and a webhook receiver."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from shotline.api import open_store
from shotline.core.capabilities import load_table
from shotline.service import actions, tenants
from shotline.service.server import create_app
from shotline.settings import Settings

from . import killpoint

# Two short shots: quick to draw, and enough to show per-shot behaviour.
BRIEF = "Shot 1: A red kite climbs over a green hill.\n\nShot 2: The kite string snaps in the wind."


def service_settings(home: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = dict(home=home, local_latency=0.3, poll_interval=0.05,
                                  backoff_base=0.05, allow_private_webhooks=True)
    return Settings(**{**values, **kw})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    settings: Settings
    url: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None, **kw: Any) -> httpx.Client:
        """An API client with ``key``; closed when the server stops."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)
        self.clients.append(client)
        return client

    def new_key(self, name: str = "acme") -> tenants.NewKey:
        db, _ = open_store(self.settings)
        try:
            return tenants.create_key(db, name)
        finally:
            db.close()


@contextmanager
def running(settings: Settings, *, with_worker: bool = True) -> Iterator[Server]:
    """The app under uvicorn in a thread, as `shotline serve` runs it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, with_worker=with_worker),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    handle = Server(settings, f"http://127.0.0.1:{port}")
    try:
        yield handle
    finally:
        for client in handle.clients:
            client.close()
        server.should_exit = True
        thread.join(30)


def wait_status(client: httpx.Client, render_id: str, *statuses: str,
                timeout: float = 45) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = client.get(f"/v1/renders/{render_id}").json()
        if view["status"] in statuses:
            return view
        assert time.monotonic() < deadline, f"render stayed {view['status']}: {view}"
        time.sleep(0.1)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it is sent."""

    url: str
    got: list[Received] = field(default_factory=list)
    status: int = 200

    def wait_for(self, event_type: str, timeout: float = 30) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in list(self.got):
                if r.json.get("type") == event_type:
                    return r
            time.sleep(0.05)
        raise AssertionError(f"no {event_type} webhook; got {[r.json['type'] for r in self.got]}")


@contextmanager
def receiver() -> Iterator[Receiver]:
    box: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            box[0].got.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(box[0].status)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Receiver(f"http://127.0.0.1:{httpd.server_address[1]}/hook"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- processes: `shotline serve` and `shotline worker` as a user runs them -----------------


@contextmanager
def process(home: Path, *args: str, log: Path, kill_at: str | None = None,
            **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m shotline ARGS`` with its own home; everything it prints goes to ``log``
    (a file, not a pipe nobody reads: a chatty server would block on a full pipe).
    ``kill_at`` arms a recovery point (tests/killpoint.py): the process SIGKILLs itself there."""
    env = {**os.environ, "SHOTLINE_HOME": str(home), "SHOTLINE_POLL_INTERVAL": "0.05",
           "SHOTLINE_ALLOW_PRIVATE_WEBHOOKS": "1", **env}
    entry = [str(killpoint.SCRIPT), kill_at] if kill_at else ["-m", "shotline"]
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, *entry, *args], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def queue_render(settings: Settings, tenant: str, **kw: Any) -> str:
    """Queue BRIEF for ``tenant`` as the API would, without a server; its id."""
    db, _ = open_store(settings)
    try:
        req = actions.RenderRequest(brief=BRIEF, seconds=4, size="640x360", **kw)
        view, _ = asyncio.run(actions.submit(db, settings, load_table(settings.overrides_path),
                                             tenant, req))
        return str(view["id"])
    finally:
        db.close()


def render_view(settings: Settings, render_id: str) -> dict[str, Any]:
    """A render as the API shows it, read as the operator."""
    db, _ = open_store(settings)
    try:
        return actions.get(db, None, render_id, operator=True)
    finally:
        db.close()
