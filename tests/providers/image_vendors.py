"""The fal, BytePlus and Runway fakes on the shared vendor server, with their keys set:
fixtures the vendor tests share (tests/providers/conftest.py makes them available)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .fake_byteplus import KEY as ARK_KEY
from .fake_byteplus import FakeBytePlus, install_byteplus
from .fake_fal import KEY as FAL_KEY
from .fake_fal import FalFake, install_fal
from .fake_runway import KEY as RUNWAY_KEY
from .fake_runway import FakeRunway, install_runway
from .vendor_server import VendorServer


@pytest.fixture
def fal(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[FalFake]:
    monkeypatch.setenv("FAL_KEY", FAL_KEY)
    monkeypatch.setenv("SHOTLINE_FAL_BASE_URL", vendor_server.url)
    monkeypatch.setenv("SHOTLINE_FAL_API_URL", vendor_server.url + "/platform")
    yield install_fal(vendor_server, clip_bytes)


@pytest.fixture
def byteplus(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
             monkeypatch: pytest.MonkeyPatch) -> FakeBytePlus:
    monkeypatch.setenv("ARK_API_KEY", ARK_KEY)
    monkeypatch.setenv("SHOTLINE_BYTEPLUS_BASE_URL", vendor_server.url)
    return install_byteplus(vendor_server, clip_bytes)


@pytest.fixture
def runway(vendor_server: VendorServer, clip_bytes: Callable[[int], bytes],
           monkeypatch: pytest.MonkeyPatch) -> FakeRunway:
    monkeypatch.setenv("RUNWAYML_API_SECRET", RUNWAY_KEY)
    monkeypatch.setenv("SHOTLINE_RUNWAY_BASE_URL", vendor_server.url)
    return install_runway(vendor_server, clip_bytes)
