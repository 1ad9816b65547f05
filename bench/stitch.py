"""Stitch throughput and peak memory, side by side in one run.

1. Throughput (seconds of output per wall second) of `stitch_files` on clips that already
   match the output (their video is copied; only their sound is levelled and encoded),
   with and without loudness matching, beside the same clips in another format (every clip
   normalised), and moviepy's concatenation of them when moviepy is installed in the bench's
   environment (`pip install moviepy`; it is not a dependency of shotline).
2. Sound: audio/video drift after 40 segments (a clip with a flash and a beep at 0.5 s,
   cut to 29 frames each time, so every cut falls elsewhere on the AAC grid), and the
   loudness spread between shots whose sources are 34 dB apart.
3. Peak memory (RSS of the whole process tree, sampled every 10 ms) of `shotline stitch` on
   2, 5 and 10 minutes of matching 1080p clips, beside normalising one 10 s 1080p clip.

    .venv/bin/python bench/stitch.py [--clips 8] [--skip-memory]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clips import vendor_clip as clip
from tests.clips import make_clip
from tests.test_media import beep_onsets, centre_luma, flash_frames, gray_frames

from shotline.engine import media, sound
from shotline.engine.assembly import stitch_files
from shotline.engine.normalise import Format
from shotline.engine.seams import AUDIO_RATE, samples_at


def throughput(tmp: Path, count: int) -> None:
    seconds = 6
    matching = [clip(tmp / f"m{i}.mp4", seconds, "1280x720") for i in range(count)]
    other = [clip(tmp / f"o{i}.mp4", seconds, "1280x720", fps=30) for i in range(count)]
    total = count * seconds
    fmt = Format(size=(1280, 720), fps=24, audio=True)
    print(f"stitch throughput, {count} clips x {seconds} s -> 1280x720@24 ({total} s of output), "
          "median of 5")
    rows = [("matching, loudness -16 LUFS", matching, -16.0),
            ("matching, --no-loudness", matching, None),
            ("30 fps clips (normalised), loudness", other, -16.0)]
    for name, clips, loudness in rows:
        segments = [media.Segment(c, seconds * 24) for c in clips]
        walls = []
        for _ in range(5):  # the median of five; the same clips are read from the page cache
            # A new file each time, as a first stitch writes: replacing the last run's output
            # would time the file system freeing it too.
            (tmp / "out.mp4").unlink(missing_ok=True)
            start = time.perf_counter()
            joined = stitch_files(segments, tmp / "out.mp4", fmt, loudness=loudness)
            walls.append(time.perf_counter() - start)
        wall = statistics.median(walls)
        how = "copied" if joined.copied else "normalised"
        print(f"  {name:38} {wall:6.2f} s  {total / wall:7.1f}x real time ({how})")
    theirs = moviepy_rate(matching, tmp / "mp.mp4", total)
    print(f"  {'moviepy (concatenate + encode)':38} " +
          (f"        {theirs:7.1f}x real time" if theirs else "not installed"))


def moviepy_rate(clips: list[Path], out: Path, total: float) -> float | None:
    try:
        from moviepy import VideoFileClip, concatenate_videoclips
    except ImportError:
        return None
    start = time.perf_counter()
    loaded = [VideoFileClip(str(c)) for c in clips]
    concatenate_videoclips(loaded, method="compose").write_videofile(
        str(out), fps=24, codec="libx264", audio_codec="aac", preset="veryfast", logger=None)
    for c in loaded:
        c.close()
    return total / (time.perf_counter() - start)


def sync(tmp: Path) -> None:
    print("\nsound")
    small = Format(size=(160, 90), fps=24, audio=True, preset="ultrafast")
    marker = make_clip(tmp / "marker.mp4", seconds=1.25, size=(160, 90), audio=(48000, 2),
                       marker_at=0.5)
    out = tmp / "forty.mp4"
    joined = stitch_files([media.Segment(marker, 29)] * 40, out, small)
    flashes = flash_frames([centre_luma(im) for im in gray_frames(out)])
    beeps = beep_onsets(out)
    drift = [(beep - flash / 24) * AUDIO_RATE for beep, flash in zip(beeps, flashes, strict=True)]
    length = round(((joined.probe.audio_duration or 0) - joined.probe.duration) * AUDIO_RATE)
    print(f"  40 segments: {len(flashes)} flashes, {len(beeps)} beeps; beep minus flash at "
          f"segment 1 {drift[0]:+.0f}, at segment 40 {drift[-1]:+.0f} samples (worst "
          f"{max(map(abs, drift)):.0f}; one AAC frame is 1024); sound minus picture length "
          f"{length:+d} samples")
    hums = [0.01, 0.08, 0.5]
    clips = [make_clip(tmp / f"hum{i}.mp4", seconds=2, size=(160, 90), audio=(48000, 2), hum=h)
             for i, h in enumerate(hums)]
    for target in (-16.0, None):
        levelled = tmp / "levelled.mp4"
        stitch_files([media.Segment(c, 48) for c in clips], levelled, small, loudness=target)
        heard = sound.Sound(sound.Source(levelled, 1, 0.0))
        edge = AUDIO_RATE // 10  # each shot without the cuts' silent frames
        levels = [sound.measure(heard, samples_at(48, 24) - 2 * edge,
                                samples_at(48 * k, 24) + edge).integrated or -70.0
                  for k in range(3)]
        print(f"  three shots, sources 34 dB apart, loudness {target if target else 'off':>5}: "
              f"{', '.join(f'{x:.1f}' for x in levels)} LUFS, spread {max(levels) - min(levels):.2f} LU")


def _tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def peak(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak MB of the process tree ``argv`` starts."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    most = 0
    while proc.poll() is None:
        most = max(most, _tree_rss(proc.pid))
        time.sleep(0.01)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.read().decode() if proc.stderr else "failed")
    return time.perf_counter() - start, most / 1e6


def memory(tmp: Path) -> None:
    ten = clip(tmp / "hd.mp4", 10, "1920x1080")
    shotline = [sys.executable, "-m", "shotline", "stitch", "--size", "1920x1080", "--json"]
    print("\npeak memory of the whole process tree (Python and any ffmpeg)")
    for minutes in (2, 5, 10):
        wall, mb = peak([*shotline, *[str(ten)] * (6 * minutes), "-o", str(tmp / "long.mp4")])
        print(f"  shotline stitch, {minutes:2d} min of matching 1080p   {mb:6.0f} MB   "
              f"({wall:5.1f} s, {minutes * 60 / wall:5.0f}x real time)")
    wall, mb = peak([*shotline, "--fps", "25", str(ten), "-o", str(tmp / "one.mp4")])
    print(f"  normalising one 10 s 1080p clip          {mb:6.0f} MB   ({wall:5.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        throughput(Path(tmp), args.clips)
        sync(Path(tmp))
        if not args.skip_memory:
            memory(Path(tmp))


if __name__ == "__main__":
    main()
