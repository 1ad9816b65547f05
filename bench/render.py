"""Render wall time against shot count, and stitch throughput, measured side by side.

1. Wall time to render N = 1, 2, 4, 8 shots under a fixed per-job latency with the local
   provider, as a ratio to one shot (concurrency makes it close to 1 up to the limit).
2. Stitch throughput (seconds of output per second of wall time) for matching clips and
   for mismatched clips (other fps, size, codec, pixel format, audio), next to moviepy's
   concatenation of the same clips when moviepy is installed in the bench's environment
   (`pip install moviepy`; it is not a dependency of shotline).

    .venv/bin/python bench/render.py [--latency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.clips import make_clip

from shotline.api import arender
from shotline.engine import media
from shotline.settings import Settings


def render_times(latency: float, home: Path) -> None:
    print(f"render wall time, local provider, {latency:g} s latency per job, 2 s shots")
    base = None
    for n in (1, 2, 4, 8):
        brief = "\n".join(f"Shot {i + 1}: Beat number {i + 1} of the sequence." for i in range(n))
        settings = Settings(home=home / f"n{n}", local_latency=latency, concurrency=8,
                            poll_interval=0.2)
        start = time.perf_counter()
        asyncio.run(arender(brief, seconds=2 * n, size="640x360", settings=settings))
        wall = time.perf_counter() - start
        base = base or wall
        print(f"  N={n}: {wall:6.2f} s  ratio to N=1: {wall / base:5.2f}  "
              f"(sequential would be ~{n:.0f}x)")


def stitch_throughput(tmp: Path) -> None:
    matching = [make_clip(tmp / f"m{i}.mp4", seconds=4, size=(640, 360), fps=24,
                          audio=(48000, 2)) for i in range(4)]
    mixed = [
        make_clip(tmp / "x0.mp4", seconds=4, size=(640, 360), fps=30, audio=(44100, 1)),
        make_clip(tmp / "x1.mp4", seconds=4, size=(360, 640), fps=25, audio=None),
        make_clip(tmp / "x2.mp4", seconds=4, size=(640, 360), fps=24, codec="hevc",
                  audio=(48000, 2)),
        make_clip(tmp / "x3.mp4", seconds=4, size=(640, 360), fps=24, pix_fmt="yuv444p",
                  audio=(48000, 2)),
    ]
    print("\nstitch throughput (seconds of output per wall second), 4 clips x 4 s -> 640x360@24")
    for name, clips in (("matching", matching), ("mismatched", mixed)):
        segs = [media.Segment(c, 96) for c in clips]
        start = time.perf_counter()
        media.stitch(segs, tmp / f"out-{name}.mp4", size=(640, 360), fps=24, audio=True)
        ours = 16 / (time.perf_counter() - start)
        theirs = moviepy_rate(clips, tmp / f"mp-{name}.mp4")
        vs = f"   moviepy {theirs:5.2f}x   ratio {ours / theirs:4.2f}" if theirs else \
            "   moviepy not installed"
        print(f"  {name:10}: shotline {ours:5.2f}x{vs}")


def moviepy_rate(clips: list[Path], out: Path) -> float | None:
    try:
        from moviepy import VideoFileClip, concatenate_videoclips
    except ImportError:
        return None
    start = time.perf_counter()
    loaded = [VideoFileClip(str(c)).resized((640, 360)) for c in clips]
    joined = concatenate_videoclips(loaded, method="compose")
    joined.write_videofile(str(out), fps=24, codec="libx264", audio_codec="aac",
                           preset="veryfast", logger=None)
    for clip in loaded:
        clip.close()
    return 16 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        render_times(args.latency, Path(tmp))
        stitch_throughput(Path(tmp))


if __name__ == "__main__":
    main()
