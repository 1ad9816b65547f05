"""What a plan will cost, before any call is made.

Prices come from the capability table: USD per billed second by resolution tier, times
the model's audio multiplier when optional audio is switched on (audio-always models are
priced with audio already). Billed seconds are the seconds the vendor bills: the
requested duration rounded up to the vendor's billing block, never the trimmed length
we keep. Money is Decimal end to end; floats appear only in JSON output.

A model that bills failed attempts can cost more than its estimate: the worst case is
every shot failing on every try the renderer makes, and the budget reserves against that
one attempt at a time (see store/ledger.py), never past a cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .capabilities import Capabilities
from .planner import Plan, billed

CENT = Decimal("0.01")


@dataclass(frozen=True)
class ShotCost:
    index: int
    billed_seconds: int
    unit_price: Decimal
    cost_usd: Decimal


@dataclass(frozen=True)
class Estimate:
    model: str
    billed_seconds: int
    cost_usd: Decimal
    shots: tuple[ShotCost, ...]
    price_source: str
    # What the render could bill if every try of every shot failed and was billed; equal
    # to ``cost_usd`` for models that do not bill failed attempts.
    worst_usd: Decimal = Decimal(0)


def unit_price(caps: Capabilities, size: str, audio: bool) -> Decimal:
    """USD per billed second for one call of this model at ``size``."""
    price = caps.price_per_second(size)
    if audio and caps.audio == "optional":
        price *= caps.audio_multiplier
    return price


def call_cost(caps: Capabilities, seconds: int, size: str, audio: bool) -> ShotCost:
    """The cost of one call of ``seconds`` (index 0; callers replace it)."""
    secs = billed(caps, seconds)
    unit = unit_price(caps, size, audio)
    return ShotCost(0, secs, unit, unit * secs)


def estimate(plan: Plan, caps: Capabilities, attempts: int = 1) -> Estimate:
    """Cost of every shot of ``plan`` and the total; ``attempts`` is the most tries per shot."""
    shots = tuple(
        ShotCost(s.index, c.billed_seconds, c.unit_price, c.cost_usd)
        for s in plan.shots
        for c in [call_cost(caps, s.seconds, plan.size, s.audio)]
    )
    cost = sum((s.cost_usd for s in shots), Decimal(0))
    return Estimate(
        model=plan.model,
        billed_seconds=sum(s.billed_seconds for s in shots),
        cost_usd=cost,
        shots=shots,
        price_source=caps.price_source,
        worst_usd=cost * attempts if caps.billed_on_failure else cost,
    )


def usd(amount: Decimal) -> float:
    """A JSON-friendly number: exact to a hundredth of a cent."""
    return float(amount.quantize(Decimal("0.0001")))
