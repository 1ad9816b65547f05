from __future__ import annotations

from decimal import Decimal

from shotline.core.brief import parse_brief
from shotline.core.capabilities import load_table
from shotline.core.planner import PlanOptions, plan
from shotline.core.pricing import estimate

from .conftest import example


def test_estimate_uses_billed_seconds_and_audio_multiplier() -> None:
    caps = load_table().get("local/sim")  # $0.10/s, audio x2, durations 4/6/8
    brief = parse_brief(example("tea-timecoded.txt").read_text())  # 5, 6, 4, 5 s
    silent = estimate(plan(brief, caps, PlanOptions(audio=False)), caps)
    assert [s.billed_seconds for s in silent.shots] == [6, 6, 4, 6]
    assert silent.cost_usd == Decimal("2.20")
    loud = estimate(plan(brief, caps, PlanOptions(audio=True)), caps)
    assert loud.cost_usd == Decimal("4.40")
    assert sum(s.cost_usd for s in loud.shots) == loud.cost_usd


def test_always_audio_is_not_multiplied() -> None:
    table = load_table()
    always = [c for c in table if c.audio == "always" and c.status == "active"]
    assert always, "the table has audio-always models (Kling 4.0, Grok, Omni...)"
    for caps in always[:3]:
        p = plan(parse_brief("A cat."), caps, PlanOptions(seconds=caps.min_seconds))
        e = estimate(p, caps)
        assert e.cost_usd == caps.price_per_second(p.size) * caps.min_seconds


def test_preview_is_free() -> None:
    caps = load_table().get("local/preview")
    p = plan(parse_brief(example("bakery-shotlist.md").read_text()), caps)
    assert estimate(p, caps).cost_usd == 0
