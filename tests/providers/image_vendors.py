"""The fal and BytePlus fakes on the shared vendor server, with their keys set: fixtures
the vendor tests share (tests/providers/conftest.py makes them available)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .fake_byteplus import KEY as ARK_KEY
from .fake_byteplus import FakeBytePlus, install_byteplus
from .fake_fal import KEY as FAL_KEY
from .fake_fal import FalFake, install_fal
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
