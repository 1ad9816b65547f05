"""What hostile input costs: refusing or planning it, against planning an ordinary brief.

Prints, side by side in one run:

* the planner's sentence partition, one pointer per group (what shotline does) vs trying
  every last cut (the same answers, O(n·m²)), for one long shot of short sentences;
* the time to refuse a 5.8 MB one-paragraph brief, a JSON brief nested 50,000 deep, a
  shot of 50,000 sentences, and to plan 200 hinted shots with crossfades, each as a ratio
  to planning ``examples/bakery-shotlist.md``;
* scrubbing a 500-character vendor message of one key in every form, per call.

    .venv/bin/python bench/inputs.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import shotline
from shotline.core.planner import _partition
from shotline.errors import ShotlineError
from shotline.providers.scrub import scrub

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bakery-shotlist.md"


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def every_cut(weights: list[float], n: int) -> list[int]:
    """The exhaustive search the planner used to run (cuts only, for timing)."""
    m = len(weights)
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    best = [[inf] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for j in range(1, n + 1):
        for i in range(j, m - (n - j) + 1):
            for k in range(j - 1, i):
                value = max(best[j - 1][k], prefix[i] - prefix[k])
                if value < best[j][i] - 1e-12:
                    best[j][i] = value
    return [0]


def refused(text: str, **kw: object) -> Callable[[], object]:
    def run() -> object:
        try:
            return shotline.plan(text, model="local/preview", **kw)  # type: ignore[arg-type]
        except ShotlineError as exc:
            return exc
    return run


def main() -> None:
    print("partition of one shot into 27 calls (one pointer vs every cut):")
    for m in (100, 200, 400):
        weights = [0.4] * m
        fast = timed(lambda w=weights: _partition(w, 27), 3)
        slow = timed(lambda w=weights: every_cut(w, 27), 1)
        print(f"  {m:4d} sentences: {fast * 1e3:8.2f} ms vs {slow * 1e3:9.1f} ms "
              f"(ratio {fast / slow:.4f})")

    base = timed(refused(EXAMPLE.read_text("utf-8")))
    print(f"\nplanning {EXAMPLE.name}: {base * 1e3:.1f} ms; hostile briefs as a ratio to it:")
    cases = {
        "5.8 MB one paragraph (refused)": refused("A kite climbs over the hill " * 207_000),
        "JSON nested 50,000 deep (refused)": refused('{"shots": ' + "[" * 50_000 + "]" * 50_000
                                                     + "}"),
        "one shot of 50,000 sentences (refused)": refused("Go. " * 50_000),
        "200 shots, each hinted, crossfades": refused(
            "".join(f"- shot {i} (2 s)\n" for i in range(200)), transition="crossfade:0.5"),
        "one shot of 1,000 sentences, 600 s": refused("Go. " * 1000, seconds=600),
    }
    for name, run in cases.items():
        took = timed(run, 3)
        print(f"  {name:40s} {took * 1e3:8.1f} ms  ratio {took / base:6.1f}")

    key = "a1b2c3d4-e5f6:0123456789abcdef"
    message = ("x" * 300 + " key=" + key.replace(":", "%3A") + " basic YXBpOm" + "y" * 100)[:500]
    plain = "x" * 500
    dirty = timed(lambda: [scrub(message, [key]) for _ in range(1000)]) / 1000
    clean = timed(lambda: [scrub(plain, [key]) for _ in range(1000)]) / 1000
    print(f"\nscrubbing a 500-character message: {dirty * 1e6:.1f} µs with a key in it, "
          f"{clean * 1e6:.1f} µs without (ratio {dirty / clean:.2f})")


if __name__ == "__main__":
    main()
