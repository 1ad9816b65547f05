"""What an adapter's validate costs with the shared model table vs re-reading it each time.

Every submit (and the core's preflight) builds the vendor body from the model's row in the
table. Before the table was kept per process, each one parsed models.toml again (~20 ms),
inside the event loop. Prints both, side by side, and their ratio.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from shotline.core.capabilities import load_table, table_for
from shotline.providers.base import ShotRequest
from shotline.providers.fal import FalProvider
from shotline.settings import Settings

ROUNDS = 200


def timed(fn: object, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    os.environ.setdefault("FAL_KEY", "bench-key-123456")
    home = Path(tempfile.mkdtemp())
    settings = Settings(home=home)
    caps = load_table().get("fal/kling-video-v3-pro")
    request = ShotRequest(model=caps.model, wire_model=caps.wire_model, prompt="A kite.",
                          seconds=5, size=caps.default_size, fps=24, audio=True, seed=None,
                          take=1, key="k" * 16)
    provider = FalProvider(settings)
    shared = timed(lambda: provider.body(request), ROUNDS)
    reread = timed(lambda: (load_table(settings.overrides_path).get(request.model),
                            provider.body(request)), 50)
    stat_only = timed(lambda: table_for(settings.overrides_path), ROUNDS)
    asyncio.run(provider.aclose())
    print(f"adapter body with the shared table: {shared * 1e3:.3f} ms (median of {ROUNDS})")
    print(f"  of which the table lookup (a stat): {stat_only * 1e3:.3f} ms")
    print(f"re-reading models.toml first:       {reread * 1e3:.3f} ms (median of 50)")
    print(f"ratio shared / re-read: {shared / reread:.4f}")


if __name__ == "__main__":
    main()
