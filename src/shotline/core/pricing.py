"""What a plan will cost, before any call is made.

Prices come from the capability table: USD per billed second by resolution tier, times
the model's audio multiplier when optional audio is switched on (audio-always models are
priced with audio already). Billed seconds are the seconds the vendor bills: the
requested duration rounded up to the vendor's billing block, never the trimmed length
we keep. Money is Decimal end to end, and a decimal string in JSON (:func:`money`).

An estimate is what a render would pay now: a shot whose clip is already stored costs
nothing (``stored``), and ``full_usd`` says what it would cost without the store. Which
keys are stored is the caller's to find out (this module does no I/O); the renderer
reserves exactly the estimate's ``cost_usd`` for the same plan and store.

A model that bills failed attempts can cost more than its estimate: the worst case
(``worst_usd``) is every shot to make failing on every try the renderer makes, and the
budget reserves against that one attempt at a time (see store/ledger.py), never past a cap.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal

from .capabilities import Capabilities
from .keys import planned_key
from .planner import Plan, billed
from .takes import candidates

CENT = Decimal("0.01")


@dataclass(frozen=True)
class ShotCost:
    """One call's price: ``cost_usd`` to pay now, ``full_usd`` without the store."""

    index: int
    billed_seconds: int
    unit_price: Decimal
    cost_usd: Decimal
    stored: bool = False
    takes: int = 1  # candidates of the shot: ``billed_seconds`` and the costs cover them all

    @property
    def full_usd(self) -> Decimal:
        return self.unit_price * self.billed_seconds


@dataclass(frozen=True)
class Estimate:
    """What rendering a plan would pay now (``cost_usd``) and without the store (``full_usd``)."""

    model: str
    billed_seconds: int
    cost_usd: Decimal
    shots: tuple[ShotCost, ...]
    price_source: str
    full_usd: Decimal = Decimal(0)
    # What the render could bill if every try of every shot to make failed and was billed;
    # equal to ``cost_usd`` for models that do not bill failed attempts.
    worst_usd: Decimal = Decimal(0)

    @property
    def stored(self) -> int:
        return sum(1 for s in self.shots if s.stored)


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


def estimate(plan: Plan, caps: Capabilities, stored: Collection[str] = frozenset(),
             attempts: int = 1) -> Estimate:
    """Cost of every shot of ``plan`` and the total; shots whose keys are in ``stored`` are 0.

    ``attempts`` is the most tries the renderer makes per shot (for ``worst_usd``).
    """
    shots = []
    to_make = 0
    for s in plan.shots:
        c = call_cost(caps, s.seconds, plan.size, s.audio)
        # A shot with takes is that many calls (core/takes.py); each stored one is free.
        takes = candidates(s)
        missing = sum(1 for t in takes
                      if planned_key(plan, s.model_copy(update={"take": t}), caps) not in stored)
        to_make += c.billed_seconds * missing
        shots.append(ShotCost(s.index, c.billed_seconds * len(takes), c.unit_price,
                              c.cost_usd * missing, missing == 0, len(takes)))
    cost = sum((s.cost_usd for s in shots), Decimal(0))
    return Estimate(
        model=plan.model,
        billed_seconds=to_make,
        cost_usd=cost,
        shots=tuple(shots),
        price_source=caps.price_source,
        full_usd=sum((s.full_usd for s in shots), Decimal(0)),
        worst_usd=cost * attempts if caps.billed_on_failure else cost,
    )


def money(amount: Decimal) -> str:
    """USD as a decimal string for JSON: exact, with no float rounding (``"2.6"``, ``"0"``)."""
    return format(Decimal(amount).normalize(), "f")


def usd(amount: Decimal) -> float:
    """A float, for the few places that need one (never JSON: see :func:`money`)."""
    return float(amount.quantize(Decimal("0.0001")))
