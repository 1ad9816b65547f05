from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ..clips import make_clip
from .image_vendors import byteplus, fal, runway  # noqa: F401  (fixtures: the fakes set up for images)
from .vendor_server import vendor_server  # noqa: F401  (a fixture for the vendor tests)


@pytest.fixture(scope="session")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int], bytes]:
    """MP4 bytes of a small real clip lasting ``seconds``, made once per length."""
    made: dict[int, bytes] = {}
    root = tmp_path_factory.mktemp("vendor-clips")
    lock = threading.Lock()  # fake servers answer from several threads at once

    def get(seconds: int) -> bytes:
        with lock:
            return _get(seconds)

    def _get(seconds: int) -> bytes:
        if seconds not in made:
            path = root / f"{seconds}.mp4"
            make_clip(path, seconds=seconds, size=(320, 180), audio=(48000, 2))
            made[seconds] = Path(path).read_bytes()
        return made[seconds]

    return get
