"""What a render costs after its last shot arrives, and what more shots cost, side by side.

A vendor fake that encodes nothing stands in for the vendors: after a set latency each job
"returns" a pre-made clip (x264 medium at CRF 23 with 44.1 kHz AAC, made once). Two kinds:
clips already in the output's size and frame rate (their video is copied as it is, and only
decoded for the quality checks), and 1080p clips for a 720p output (every one normalised,
as any clip that does not match). Prints, in one run:

1. The tail of a 30 s 720p render with hard cuts (6 shots of 5 s, arriving 4 s apart):
   from the last clip stored, and from its segment ready, to the output written, for both
   kinds, beside re-stitching every clip from scratch (what a render paid after its last
   clip before segments were made as clips arrived).
2. Wall time for N = 1, 2, 4, 8 shots of 2 s at 640x360 under 5 s latency, as a ratio to
   one shot (the goal: 4 shots within 1.10x of one), for both kinds.

    .venv/bin/python bench/render.py [--latency 5] [--gap 4]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clips import vendor_clip

from shotline import api
from shotline.core.capabilities import load_table, parse_size
from shotline.engine.assembly import Assembly
from shotline.engine.normalise import Format
from shotline.engine.renderer import RenderJob, ShotEvent, render_plan
from shotline.providers.base import BaseProvider, JobRef, JobStatus, ShotRequest
from shotline.settings import Settings
from shotline.store.cache import Pieces


class Premade(BaseProvider):
    """A vendor that encodes nothing: each job is a pre-made clip, ready after a latency."""

    name: ClassVar[str] = "local"

    def __init__(self, clip: Path, latency: Callable[[int], float]) -> None:
        self.clip = clip
        self.latency = latency

    async def submit(self, request: ShotRequest) -> JobRef:
        return JobRef(self.name, f"premade_{uuid.uuid4().hex}",
                      {"ready": time.time() + self.latency(request.index),
                       "seconds": request.seconds})

    async def poll(self, ref: JobRef) -> JobStatus:
        left = ref.data["ready"] - time.time()
        if left > 0:
            return JobStatus("running", progress=0.5, next_poll=min(0.05, left))
        return JobStatus("succeeded", progress=1.0, billed_seconds=ref.data["seconds"])

    async def download(self, ref: JobRef, dest: Path) -> Path:
        shutil.copyfile(self.clip, dest)
        return dest

    async def cancel(self, ref: JobRef) -> bool:
        return False

    async def aclose(self) -> None:
        return None


def premade(path: Path, seconds: float, size: str) -> Path:
    """A vendor-like clip: x264 medium at CRF 23, 44.1 kHz AAC; a moving picture and a tone."""
    return vendor_clip(path, seconds, size, preset="medium", rate=44100)


def bigger(size: str) -> str:
    """A clip size 1.5 times ``size`` (1280x720 -> 1920x1080): one every output normalises."""
    w, h = parse_size(size)
    return f"{w * 3 // 2}x{h * 3 // 2}"


class Clock:
    """Records when each event of a render happened."""

    def __init__(self) -> None:
        self.events: list[tuple[float, ShotEvent]] = []
        self.stored: list[float] = []  # when each clip's row was written (the store's own call)
        self.copied: set[bool] = set()  # whether the shots' video was copied (or normalised)

    def __call__(self, event: ShotEvent) -> None:
        self.events.append((time.perf_counter(), event))

    def last(self, test: Callable[[ShotEvent], bool]) -> float:
        return max(t for t, e in self.events if test(e))


async def run(shots: int, seconds: int, size: str, home: Path, clip: Path,
              latency: Callable[[int], float], clock: Clock) -> float:
    settings = Settings(home=home, concurrency=max(8, shots), poll_interval=0.05)
    brief = "\n".join(f"Shot {i + 1}: Beat number {i + 1} of the sequence." for i in range(shots))
    plan = api.plan(brief, model="local/preview", seconds=shots * seconds, size=size,
                    audio=True, settings=settings)
    db, store = api.open_store(settings)
    record_clip = store.record_clip

    def recorded(*args: Any, **kwargs: Any) -> None:
        record_clip(*args, **kwargs)
        clock.stored.append(time.perf_counter())

    store.record_clip = recorded  # type: ignore[method-assign]
    job = RenderJob(caps=load_table(settings.overrides_path).get("local/preview"),
                    provider=Premade(clip, latency), settings=settings, db=db, store=store,
                    listener=clock)
    start = time.perf_counter()
    try:
        result = await render_plan(plan, job)
    finally:
        db.close()
    wall = time.perf_counter() - start
    clock.copied = {s.segment.copied for s in result.shots if s.segment is not None}
    return wall


def tail(tmp: Path, gap: float) -> None:
    print(f"tail of a 30 s 720p render, hard cuts, 6 shots of 5 s arriving {gap:g} s apart")
    for kind, size in (("copied", "1280x720"), ("normalised", bigger("1280x720"))):
        clip = premade(tmp / f"vendor-{kind}.mp4", 5, size)
        clock = Clock()
        home = tmp / f"tail-{kind}"
        wall = asyncio.run(run(6, 5, "1280x720", home, clip, lambda i: 1 + gap * i, clock))
        written = clock.last(lambda e: e.index == -1 and e.state == "stitched")
        stored = max(clock.stored)
        ready = clock.last(lambda e: e.index >= 0 and e.message == "segment ready")
        assert clock.copied == {kind == "copied"}, f"{kind} clips were not {kind}"
        print(f"  {size} clips ({kind}): render wall time {wall:.2f} s")
        print(f"    last clip stored   -> output written     {written - stored:7.2f} s   "
              f"(includes that clip's segment)")
        print(f"    last segment ready -> output written     {written - ready:7.2f} s")
    # Every clip normalised again and joined, as a render had to once its last clip was in.
    clips = sorted((tmp / "tail-normalised" / "store" / "clips").rglob("*.mp4"))
    start = time.perf_counter()
    fresh = Assembly([120] * len(clips), Format(size=(1280, 720), fps=24, audio=True),
                     Pieces(tmp / "fresh"), loudness=-16.0)
    with ThreadPoolExecutor(Settings().normalise_concurrency) as pool:
        segments = list(pool.map(lambda k: fresh.prepare(k, clips[k], f"again:{k}"),
                                 range(len(clips))))
    fresh.join(segments, tmp / "again.mp4")
    print(f"  re-stitching all 6 clips from scratch      {time.perf_counter() - start:7.2f} s")


def scaling(tmp: Path, latency: float) -> None:
    print(f"\nN shots of 2 s at 640x360 under {latency:g} s latency, non-encoding vendor fake"
          " (median of 3)")
    for kind, size in (("copied", "640x360"), ("normalised", bigger("640x360"))):
        clip = premade(tmp / f"vendor360-{kind}.mp4", 2, size)
        base = None
        for n in (1, 2, 4, 8):
            clock = Clock()
            walls = [asyncio.run(run(n, 2, "640x360", tmp / f"n{n}-{kind}-{r}", clip,
                                     lambda _: latency, clock)) for r in range(3)]
            assert clock.copied == {kind == "copied"}, f"{kind} clips were not {kind}"
            wall = statistics.median(walls)
            base = base or wall
            print(f"  {size} clips ({kind}) N={n}: {wall:6.2f} s   ratio to N=1: {wall / base:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=5.0)
    parser.add_argument("--gap", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tail(Path(tmp), args.gap)
        scaling(Path(tmp), args.latency)


if __name__ == "__main__":
    main()
