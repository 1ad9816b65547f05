from __future__ import annotations

from typing import Any

import pytest

from shotline.core.keys import canonical_json, render_key, shot_key

BASE: dict[str, Any] = dict(
    provider="local", model="local/sim", prompt="A café.", seconds=4, size="1280x720",
    fps=24, audio=False, seed=None, take=1,
)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_key_is_stable_and_prefixed() -> None:
    assert shot_key(**BASE) == shot_key(**dict(reversed(list(BASE.items()))))
    assert shot_key(**BASE).startswith("sha256:") and len(shot_key(**BASE)) == 71


@pytest.mark.parametrize(
    ("field", "value"),
    [("provider", "fal"), ("model", "local/preview"), ("prompt", "A cafe."), ("seconds", 6),
     ("size", "720x1280"), ("fps", 25), ("audio", True), ("seed", 7), ("take", 2),
     ("images", ["sha256:abc"])],
)
def test_every_input_changes_the_key(field: str, value: Any) -> None:
    assert shot_key(**{**BASE, field: value}) != shot_key(**BASE)


def test_render_key_covers_order_and_stitch_settings() -> None:
    a, b = shot_key(**BASE), shot_key(**{**BASE, "take": 2})
    assert render_key([a, b], {"fps": 24}) != render_key([b, a], {"fps": 24})
    assert render_key([a, b], {"fps": 24}) != render_key([a, b], {"fps": 25})
