"""Reopening a stored render against rendering it, side by side in one run.

Renders a three-shot brief once with the local provider (with a per-job latency standing
in for a vendor's minutes), then reopens it: the same library call again (served from the
render cache) and a `shotline show RENDER_ID` process. Prints each time and the ratio.

    .venv/bin/python bench/cache.py [--latency 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shotline.api import render
from shotline.settings import Settings

BRIEF = "Shot 1: A red kite rises.\nShot 2: A blue kite dips.\nShot 3: Both kites tangle.\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), local_latency=args.latency, poll_interval=0.1)
        opts = dict(model="local/sim", seconds=12, size="640x360", settings=settings)
        start = time.perf_counter()
        first = render(BRIEF, **opts)  # type: ignore[arg-type]
        t_render = time.perf_counter() - start

        start = time.perf_counter()
        again = render(BRIEF, **opts)  # type: ignore[arg-type]
        t_lib = time.perf_counter() - start
        assert again.reopened and again.cost_usd == 0

        env = {**os.environ, "SHOTLINE_HOME": tmp}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "shotline", "show", first.render_id],
                       check=True, capture_output=True, env=env)
        t_cli = time.perf_counter() - start

    print(f"render (3 shots, {args.latency:g} s latency per job): {t_render:8.3f} s "
          f"(${first.cost_usd:.2f})")
    print(f"reopen, library call:                   {t_lib:8.3f} s   "
          f"ratio {t_lib / t_render:.4f}  ({t_render / t_lib:,.0f}x faster), $0.00")
    print(f"reopen, `shotline show` process:        {t_cli:8.3f} s   "
          f"ratio {t_cli / t_render:.4f}  ({t_render / t_cli:,.0f}x faster), $0.00")


if __name__ == "__main__":
    main()
