"""Billed seconds of shotline's plan against the naive plan that cuts at the per-call cap.

For every active model and targets from 5 to 120 s, plan a long prose brief (enough
sentences to split anywhere) and compare billed seconds with the naive plan: as many
full-cap calls as fit, then one call of the shortest allowed duration covering the rest.
Prints one row per model: the ratio ours/naive per target, and the mean.

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


if __name__ == "__main__":
    main()
