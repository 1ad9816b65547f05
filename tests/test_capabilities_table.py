"""The packaged capability/price table: real properties every entry must keep."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from functools import cache
from pathlib import Path

import pytest

from shotline.core.capabilities import Capabilities, ModelTable, load_table, tier_of
from shotline.errors import CapabilityError, OverrideError
from shotline.providers.base import Provider, ShotRequest
from shotline.providers.plugins import load_provider
from shotline.settings import Settings

from .images import image_input

PROVIDERS = {"fal", "replicate", "runway", "luma", "xai", "google", "byteplus", "openai"}
SORA_SUNSET = dt.date(2026, 9, 24)
IMAGE_TO_VIDEO_ONLY = {"runway/gen4_turbo", "replicate/runwayml-gen4-turbo"}


@cache
def table() -> ModelTable:
    return load_table()


def vendor_models() -> list[Capabilities]:
    return [c for c in table() if c.provider != "local"]


def test_table_loads_with_enough_vendor_models() -> None:
    active = [c for c in vendor_models() if c.status == "active"]
    assert len(active) >= 40
    assert {"local/preview", "local/sim"} <= set(table().names())


def test_every_vendor_price_has_a_source_and_a_date() -> None:
    for caps in vendor_models():
        assert caps.price_ref.strip() and caps.price_date is not None, caps.model
        assert dt.date(2025, 1, 1) <= caps.price_date <= dt.date(2026, 12, 31), caps.model
        if caps.price_source == "inferred":  # an inferred price says so where it is given
            assert "inferred" in caps.price_ref, caps.model


def test_a_packaged_entry_without_a_price_source_is_refused() -> None:
    text = """
[models."acme/dream-1"]
wire_model = "dream-1"
durations = [5]
max_seconds = 5
sizes = ["1280x720"]
fps = [24]
audio = "none"
prices = { "*" = 0.1 }
"""
    with pytest.raises(OverrideError, match="price_ref"):
        load_table(packaged=text)
    dated = text + 'price_ref = "acme.example/pricing"\nprice_date = 2026-11-20\n'
    assert load_table(packaged=dated).get("acme/dream-1").price_date == dt.date(2026, 11, 20)


def test_the_late_2026_lineup_is_in_the_table() -> None:
    by_wire = {c.wire_model: c for c in vendor_models() if c.status == "active"}
    kling3 = table().get("fal/kling-video-v3-pro")
    assert (kling3.durations[0], kling3.max_seconds, kling3.audio_multiplier) == (3, 15, Decimal("1.5"))
    assert {"first_frame", "last_frame"} <= set(kling3.image_inputs)
    seedance = table().get("runway/seedance2")
    assert (seedance.durations[0], seedance.max_seconds) == (4, 15)
    assert "reference" in seedance.image_inputs
    assert table().get("runway/seedance2_5").max_seconds == 30
    gen45 = table().get("runway/gen4.5")
    assert (gen45.durations[0], gen45.max_seconds, gen45.audio) == (2, 10, "none")
    assert table().get("xai/grok-imagine-video").audio == "optional"
    for wire in ("fal-ai/veo3.1", "fal-ai/veo3.1/fast", "fal-ai/veo3.1/lite", "ray-3.2",
                 "hailuo3", "fal-ai/wan/v2.7/text-to-video", "veo-3.1-generate-001"):
        assert wire in by_wire, wire


def test_every_provider_has_a_model() -> None:
    have = {c.provider for c in vendor_models()}
    assert PROVIDERS <= have, f"missing: {sorted(PROVIDERS - have)}"


def test_every_name_has_a_known_provider_prefix() -> None:
    for name in table().names():
        provider, sep, rest = name.partition("/")
        assert sep and provider and rest, name
        assert provider in PROVIDERS | {"local"}, name
    assert all(c.wire_model for c in table())


def test_kling_26_pro() -> None:
    caps = table().get("fal/kling-video-v2.6-pro")
    assert caps.durations == (5, 10) and caps.max_seconds == 10
    assert caps.audio == "optional" and caps.audio_multiplier == Decimal(2)
    assert caps.wire_model == "fal-ai/kling-video/v2.6/pro/text-to-video"
    assert caps.nearest_duration(7) == 10 and caps.nearest_duration(11) is None


def test_luma_ray_32_bills_in_five_second_blocks() -> None:
    caps = table().get("luma/ray-3.2")
    assert caps.billing_block == 5
    assert caps.durations == (5, 10)


def test_runway_gen4_turbo_is_image_to_video_only() -> None:
    caps = table().get("runway/gen4_turbo")
    assert caps.image_inputs == ("first_frame",)
    assert "image-to-video only" in caps.notes.lower()


@pytest.mark.parametrize("model", ["openai/sora-2", "openai/sora-2-pro"])
def test_sora_is_sunset_and_names_an_active_replacement(model: str) -> None:
    caps = table().get(model)
    assert caps.status == "sunset" and caps.sunset_date == SORA_SUNSET
    assert caps.replacement
    with pytest.raises(CapabilityError) as err:
        caps.require_active()
    message = str(err.value)
    assert "2026-09-24" in message and caps.replacement in message
    assert caps.replacement in table()
    replacement = table().get(caps.replacement)
    assert replacement.status == "active"
    replacement.require_active()  # does not raise


def test_every_sunset_model_has_date_and_active_replacement() -> None:
    sunset = [c for c in table() if c.status == "sunset"]
    assert len(sunset) >= 2
    for caps in sunset:
        assert caps.sunset_date is not None, caps.model
        assert caps.replacement is not None and caps.replacement in table(), caps.model
        assert table().get(caps.replacement).status == "active", caps.model


def test_active_models_have_sane_durations_and_a_price_for_every_size() -> None:
    active = [c for c in table() if c.status == "active"]
    for caps in active:
        assert all(1 <= d <= caps.max_seconds for d in caps.durations), caps.model
        assert caps.sizes and caps.default_size in caps.sizes, caps.model
        for size in caps.sizes:
            assert tier_of(size) in caps.prices or "*" in caps.prices, (caps.model, size)
            if caps.provider != "local":
                assert caps.price_per_second(size) > 0, (caps.model, size)


def test_audio_always_models_are_not_multiplied() -> None:
    always = [c for c in table() if c.audio == "always"]
    assert always
    for caps in always:
        assert caps.audio_multiplier == Decimal(1), caps.model


def test_audio_multipliers_stay_in_range() -> None:
    for caps in table():
        assert Decimal(1) <= caps.audio_multiplier <= Decimal(2), caps.model


def test_vendor_models_are_not_simulated() -> None:
    for caps in vendor_models():
        assert caps.price_source != "simulated", caps.model
        assert caps.notes, caps.model


@pytest.fixture
def every_vendor_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FAL_KEY", "REPLICATE_API_TOKEN", "RUNWAYML_API_SECRET", "LUMAAI_API_KEY",
                "XAI_API_KEY", "GOOGLE_ACCESS_TOKEN", "ARK_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(var, "test-key-123456")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")


def test_every_active_model_and_every_replacement_is_one_this_version_renders(
        every_vendor_key: None, tmp_path: Path) -> None:
    """The planner's table and the adapters agree: each active model's adapter accepts a
    plain request at its default size and shortest duration (no I/O), and every sunset
    model points at such a model."""
    settings = Settings(home=tmp_path)
    frame = image_input(b"\x89PNG\r\n\x1a\n")  # never decoded by a validate
    providers = {name: load_provider(name, settings) for name in PROVIDERS | {"local"}}
    try:
        refused = {}
        for caps in (c for c in table() if c.status == "active"):
            request = ShotRequest(
                model=caps.model, wire_model=caps.wire_model, prompt="A kite.",
                seconds=caps.durations[0], size=caps.default_size, fps=caps.default_fps,
                audio=caps.audio == "always", seed=None, take=1, key="k" * 16,
                first_frame=frame if caps.model in IMAGE_TO_VIDEO_ONLY else None)
            try:
                providers[caps.provider].preflight(request)
            except CapabilityError as exc:
                refused[caps.model] = str(exc)
        assert refused == {}
        for caps in (c for c in table() if c.status == "sunset"):
            assert caps.replacement not in refused and table().get(caps.replacement).status == \
                "active", caps.model
    finally:
        asyncio.run(_close(providers.values()))


async def _close(providers: Iterable[Provider]) -> None:
    for provider in providers:
        await provider.aclose()
