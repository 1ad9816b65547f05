"""The vendor HTTP client and redirects: a key and a prompt never travel to another host.

One real local server plays the vendor, a second one another origin. The Replicate adapter
stands in for every adapter: the redirect rules live in ``HttpProvider`` alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shotline.errors import PermanentError
from shotline.providers.base import ShotRequest
from shotline.providers.replicate import ReplicateProvider
from shotline.settings import Settings

from .fake_replicate import TOKEN, ReplicateFake, install_replicate
from .vendor_server import Request, Response, VendorServer

REQUEST = ShotRequest(model="replicate/luma-ray-3.2", wire_model="luma/ray-3.2",
                      prompt="A red kite rises.", seconds=5, size="540x540", fps=24, audio=False,
                      seed=None, take=1, key="k" * 16)
SUBMIT = "/v1/models/luma/ray-3.2/predictions"


@pytest.fixture
def other() -> Iterator[VendorServer]:
    server = VendorServer().start()
    server.route("POST", r".*")(lambda req, m: Response(201, {"id": "evil", "status": "starting"}))
    server.route("GET", r".*")(lambda req, m: Response(200, body=b"not a clip"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rep(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
        monkeypatch: pytest.MonkeyPatch) -> ReplicateFake:
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("SHOTLINE_REPLICATE_BASE_URL", vendor_server.url)
    return install_replicate(vendor_server, clip_bytes)


def direct(home: Path, call: Callable[[ReplicateProvider], Any]) -> Any:
    async def go() -> Any:
        provider = ReplicateProvider(Settings(home=home))
        try:
            return await call(provider)
        finally:
            await provider.aclose()
    return asyncio.run(go())


def redirect_to(url: str, status: int = 307) -> Callable[[Request, Any], Response]:
    return lambda req, m: Response(status, {"detail": "moved"}, headers={"location": url})


def test_a_307_on_submit_to_another_origin_is_refused_and_that_origin_gets_nothing(
        tmp_path: Path, rep: ReplicateFake, vendor_server: VendorServer,
        other: VendorServer) -> None:
    vendor_server.routes.insert(0, ("POST", re.compile(SUBMIT + "$"),
                                    redirect_to(other.url + SUBMIT)))
    with pytest.raises(PermanentError) as info:
        direct(tmp_path, lambda p: p.submit(REQUEST))
    message = str(info.value)
    assert "redirected (307) to another origin" in message and other.url in message
    assert "nothing was sent there" in message and TOKEN not in message
    assert other.requests == []
    assert len(vendor_server.calls("POST", SUBMIT)) == 1


def test_a_same_origin_redirect_is_followed_with_the_key(
        tmp_path: Path, rep: ReplicateFake, vendor_server: VendorServer) -> None:
    moved = "/v2" + SUBMIT
    real = next(fn for method, rx, fn in vendor_server.routes if method == "POST" and rx.match(SUBMIT))
    vendor_server.route("POST", r"/v2/v1/models/(?P<owner>[^/]+)/(?P<name>[^/]+)/predictions")(real)
    vendor_server.routes.insert(0, ("POST", re.compile(SUBMIT + "$"),
                                    redirect_to(moved, 308)))
    ref = direct(tmp_path, lambda p: p.submit(REQUEST))
    assert ref.job_id in {s.job_id for s in rep.accepted()}
    [followed] = vendor_server.calls("POST", "^/v2/")
    assert followed.headers["authorization"] == f"Bearer {TOKEN}"
    assert followed.json()["input"]["prompt"] == REQUEST.prompt  # 308 keeps the body


def test_a_download_may_move_to_another_origin_but_without_our_headers(
        tmp_path: Path, rep: ReplicateFake, vendor_server: VendorServer,
        other: VendorServer) -> None:
    vendor_server.route("GET", "/files/moved.mp4")(redirect_to(other.url + "/cdn/x.mp4", 302))
    dest = tmp_path / "x.mp4"
    direct(tmp_path, lambda p: p.fetch(vendor_server.url + "/files/moved.mp4", dest,
                                       headers={"x-extra": "ours"}))
    assert dest.read_bytes() == b"not a clip"
    [moved] = vendor_server.calls("GET", "^/files/")
    assert moved.headers["authorization"] == f"Bearer {TOKEN}"
    [there] = other.requests
    assert "authorization" not in there.headers and "x-extra" not in there.headers
