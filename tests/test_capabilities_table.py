"""The packaged capability/price table: real properties every entry must keep."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import cache

import pytest

from shotline.core.capabilities import Capabilities, ModelTable, load_table, tier_of
from shotline.errors import CapabilityError

PROVIDERS = {"fal", "replicate", "runway", "luma", "xai", "google", "byteplus", "openai"}
SORA_SUNSET = dt.date(2026, 9, 24)


@cache
def table() -> ModelTable:
    return load_table()


def vendor_models() -> list[Capabilities]:
    return [c for c in table() if c.provider != "local"]


def test_table_loads_with_enough_vendor_models() -> None:
    assert len(vendor_models()) >= 20
    assert {"local/preview", "local/sim"} <= set(table().names())


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
