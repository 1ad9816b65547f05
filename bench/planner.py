"""Billed seconds of shotline's plan against the naive plan that cuts at the per-call cap.

For every active model and targets from 5 to 120 s, plan a long prose brief (enough
sentences to split anywhere) and compare billed seconds with the naive plan: as many
full-cap calls as fit, then one call of the shortest allowed duration covering the rest.
Prints one row per model: the ratio ours/naive per target, and the mean.

Then the same for one shot whose length the brief fixes (a hint such as ``(40 s)``)
longer than one call: ours (the cheapest combination of allowed durations, ``cover``)
against equal pieces each snapped up to an allowed duration (what the planner did
before), e.g. 40 s on a 1-15 s model: 15+15+10 = 40 against 14+14+14 = 42.

    .venv/bin/python bench/planner.py
"""

from __future__ import annotations

import math

from shotline.core.brief import parse_brief
from shotline.core.capabilities import Capabilities, load_table
from shotline.core.planner import PlanOptions, billed, plan
from shotline.errors import ShotlineError

TARGETS = [5, 10, 15, 20, 30, 45, 60, 90, 120]
PROSE = " ".join(f"Scene beat number {i} unfolds slowly." for i in range(1, 121))


def naive(caps: Capabilities, target: float) -> int | None:
    full = math.floor(target / caps.max_seconds)
    rest = target - full * caps.max_seconds
    calls = [caps.max_seconds] * full
    if rest > 1e-9:
        last = caps.nearest_duration(rest)
        if last is None:
            return None
        calls.append(last)
    return sum(billed(caps, c) for c in calls)


def main() -> None:
    brief = parse_brief(PROSE)
    header = "model".ljust(42) + "".join(f"{t:>7}" for t in TARGETS) + "   mean"
    print("billed seconds, ours / naive cut-at-cap (lower is better)")
    print(header)
    overall: list[float] = []
    for caps in load_table():
        if caps.status != "active":
            continue
        ratios: list[float] = []
        cells = []
        for target in TARGETS:
            try:
                ours = plan(brief, caps, PlanOptions(seconds=target, max_target_seconds=600))
            except ShotlineError:
                cells.append("     --")
                continue
            base = naive(caps, target)
            if not base:
                cells.append("     --")
                continue
            ratio = ours.billed_seconds / base
            ratios.append(ratio)
            cells.append(f"{ratio:7.3f}")
        mean = sum(ratios) / len(ratios) if ratios else float("nan")
        overall += ratios
        print(caps.model.ljust(42) + "".join(cells) + f"{mean:7.3f}")
    print(f"\nall models, all targets: mean ratio {sum(overall) / len(overall):.3f}, "
          f"worst {max(overall):.3f}, best {min(overall):.3f}")



def equal_pieces(caps: Capabilities, seconds: int) -> int | None:
    """Billed seconds of ``seconds`` cut into equal pieces, each snapped up."""
    n = math.ceil(seconds / caps.max_seconds)
    each = caps.nearest_duration(seconds / n)
    return None if each is None else n * billed(caps, each)


def fixed_shots() -> None:
    lengths = [11, 17, 23, 26, 33, 40, 47, 55, 64]
    print("\none shot of a fixed length, ours / equal pieces snapped up (lower is better)")
    print("model".ljust(42) + "".join(f"{t:>7}" for t in lengths) + "   mean")
    overall: list[float] = []
    for caps in load_table():
        if caps.status != "active":
            continue
        ratios, cells = [], []
        for seconds in lengths:
            brief = parse_brief(f"{PROSE} ({seconds} s)")
            try:
                ours = plan(brief, caps, PlanOptions(max_target_seconds=600, yes=True))
            except ShotlineError:
                cells.append("     --")
                continue
            base = equal_pieces(caps, seconds)
            if not base:
                cells.append("     --")
                continue
            ratios.append(ours.billed_seconds / base)
            cells.append(f"{ratios[-1]:7.3f}")
        overall += ratios
        mean = sum(ratios) / len(ratios) if ratios else float("nan")
        print(caps.model.ljust(42) + "".join(cells) + f"{mean:7.3f}")
    print(f"\nall models, all lengths: mean ratio {sum(overall) / len(overall):.3f}, "
          f"worst {max(overall):.3f}, best {min(overall):.3f}")


if __name__ == "__main__":
    main()
    fixed_shots()
