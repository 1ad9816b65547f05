from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import av
import pytest

from shotline.api import arender, render
from shotline.engine import media
from shotline.providers.local import read_journal
from shotline.settings import Settings

from .conftest import example

pytestmark = pytest.mark.slow


def settings(home: Path, **kw: object) -> Settings:
    return Settings(home=home, poll_interval=0.05, backoff_base=0.05, **kw)  # type: ignore[arg-type]


def test_render_example_brief_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "h"
    result = render(example("tea-timecoded.txt"), size="640x360", audio=True,
                    settings=settings(home))
    probe = media.verify(result.output, size=(640, 360), fps=24, frames=20 * 24, audio=True)
    assert abs(probe.duration - 20) < 1 / 24
    assert result.poster.exists() and result.contact_sheet.exists()
    assert [s.cached for s in result.shots] == [False] * 4
    journal = read_journal(home / "local" / "journal.jsonl")
    assert [j["seconds"] for j in sorted(journal, key=lambda j: j["index"])] == [5, 6, 4, 5]
    # The same request again is served from stored clips: no new submit.
    again = render(example("tea-timecoded.txt"), size="640x360", audio=True,
                   settings=settings(home))
    assert all(s.cached for s in again.shots) and again.cost_usd == 0
    assert len(read_journal(home / "local" / "journal.jsonl")) == 4


def _submit_times(home: Path) -> list[float]:
    """When the local vendor accepted each job, from its journal (oldest first)."""
    journal = read_journal(home / "local" / "journal.jsonl", accepted_only=True)
    return sorted(datetime.fromisoformat(j["time"]).timestamp() for j in journal)


def test_shots_render_concurrently(tmp_path: Path) -> None:
    brief = "\n".join(f"Shot {i}: Beat {i}." for i in range(1, 5))
    result = render(brief, seconds=30, size="640x360",
                    settings=settings(tmp_path, local_latency=3.0))
    assert abs(result.seconds - 30) < 1 / 24
    # Every job was submitted before the first one could finish (3 s of vendor latency):
    # the four were in flight together.
    times = _submit_times(tmp_path)
    assert len(times) == 4 and times[-1] - times[0] < 3.0, times


def test_concurrency_limit_per_provider_is_honoured(tmp_path: Path) -> None:
    brief = "\n".join(f"Shot {i}: Beat {i}." for i in range(1, 5))
    render(brief, seconds=8, size="640x360",
           settings=settings(tmp_path, local_latency=1.5, concurrency=1))
    # One at a time: each job was submitted only after the one before had its 1.5 s.
    times = _submit_times(tmp_path)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 4 and all(gap >= 1.5 for gap in gaps), times


def test_cli_render_json(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    env = {**os.environ, "SHOTLINE_HOME": str(tmp_path / "h")}
    proc = subprocess.run(
        [sys.executable, "-m", "shotline", "render", str(example("bakery-shotlist.md")),
         "--seconds", "10", "--size", "640x360", "-o", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["output"] == str(out) and abs(data["seconds"] - 10) < 1 / 24
    assert [s["index"] for s in data["shots"]] == [1, 2, 3, 4, 5]
    assert all(s["cached"] is False and s["cost_usd"] == "0" for s in data["shots"])
    assert "shot 1:" in proc.stderr  # plain progress lines when not a terminal


def test_crossfade_render_is_exact(tmp_path: Path) -> None:
    result = render(example("bakery-shotlist.md"), seconds=12, size="640x360",
                    transition="crossfade:0.5", settings=settings(tmp_path))
    media.verify(result.output, size=(640, 360), fps=24, frames=12 * 24, audio=False)


def test_async_render(tmp_path: Path) -> None:
    result = asyncio.run(arender("A single calm shot of the sea.", seconds=3, size="640x360",
                                 settings=settings(tmp_path)))
    with av.open(str(result.output)) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHOTLINE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "shotline", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.timeout(150)
def test_preview_uses_the_models_cuts_for_free(tmp_path: Path) -> None:
    home = tmp_path / "h"
    proc = cli(home, "preview", "--text", "Shot 1: A gull.\nShot 2: A boat.\nShot 3: A pier.",
               "--model", "fal/kling-video-v2.6-pro", "--seconds", "17", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [s["seconds"] for s in data["shots"]] == [10, 5, 5]  # the model's 5/10 s calls
    assert data["cost_usd"] == "0" and data["estimate_usd"] == "1.4"  # 20 s x $0.07
    journal = read_journal(home / "local" / "journal.jsonl")
    assert {j["model"] for j in journal} == {"local/preview"}
    media.verify(Path(data["output"]), size=(1920, 1080), fps=24, frames=17 * 24, audio=False)


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    for args in (["render", "--text", ""], ["render", "--text", "A cat.", "--size", "7x7"],
                 ["render", "--text", "A cat.", "--model", "openai/sora-2"],
                 ["render", "--text", "A cat.", "--fit", "stretch"],
                 ["render", "--text", "A cat.", "--seconds", "-3"]):
        proc = cli(home, *args)
        assert proc.returncode == 2 and proc.stderr.startswith("error:"), (args, proc.stderr)
        assert not home.exists(), args  # no database, no file, no journal


def test_stitch_command_joins_clips_from_anywhere(tmp_path: Path) -> None:
    from .clips import make_clip

    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"]
    make_clip(clips[0], seconds=2, fps=30, audio=(44100, 1))
    make_clip(clips[1], seconds=2, size=(360, 640), audio=None)
    make_clip(clips[2], seconds=2, codec="hevc", audio=(48000, 2))
    out = tmp_path / "joined.mp4"
    proc = cli(tmp_path / "h", "stitch", *map(str, clips), "-o", str(out), "--size", "640x360",
               "--seconds", "5", "--transition", "crossfade:0.25", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["frames"] == 5 * 24
    media.verify(out, size=(640, 360), fps=24, frames=120, audio=True)
    data = json.loads(proc.stdout)
    assert data["copied"] is False  # three formats: every clip was normalised
    bad = cli(tmp_path / "h", "stitch", str(clips[0]), "-o", str(tmp_path / "x.mp4"),
              "--seconds", "30")
    assert bad.returncode == 5 and not (tmp_path / "x.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "c.mp4", "joined.mp4"]


def test_stitch_command_copies_clips_that_already_match(tmp_path: Path) -> None:
    from .clips import make_clip

    clips = [make_clip(tmp_path / f"{n}.mp4", seconds=1.5, size=(320, 180), audio=(48000, 2))
             for n in "ab"]
    out = tmp_path / "copied.mp4"
    proc = cli(tmp_path / "h", "stitch", *map(str, clips), "-o", str(out), "--size", "320x180",
               "--no-loudness", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["copied"] is True and data["frames"] == 72 and data["quality"] == []
    media.verify(out, size=(320, 180), fps=24, frames=72, audio=True, decode=True)


def test_live_display_on_a_terminal_shows_every_shot() -> None:
    import io

    from rich.console import Console

    from shotline.core.brief import parse_brief
    from shotline.core.capabilities import load_table
    from shotline.core.planner import plan
    from shotline.display import RenderDisplay
    from shotline.engine.renderer import ShotEvent

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    p = plan(parse_brief("Shot 1: A.\nShot 2: B."), load_table().get("local/preview"))
    with RenderDisplay(p, console) as display:
        display(ShotEvent(0, "rendering", 0.5))
        display(ShotEvent(1, "cached"))
        display(ShotEvent(-1, "stitched", message="1.2 s"))
    text = buffer.getvalue()
    assert "50%" in text and "cached" in text and "stitched" in text


def _video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def test_clips_already_in_the_output_format_keep_their_own_video(tmp_path: Path) -> None:
    # The local vendor renders H.264 at the plan's size and frame rate, as most vendors do
    # at a model's own size: its clips' video goes into the output as it is.
    brief = "Shot 1: A red kite rises.\nShot 2: A blue kite dips.\n"
    result = render(brief, seconds=8, size="640x360", audio=True, settings=settings(tmp_path / "a"))
    assert [s.segment.copied for s in result.shots if s.segment] == [True, True]
    clips = [s.clip for s in result.shots]
    assert all(clips)
    assert _video_packets(result.output) == [p for c in clips if c for p in _video_packets(c)]
    media.verify(result.output, size=(640, 360), fps=24, frames=8 * 24, audio=True, decode=True)
    # Copied clips were still looked at: each has its thumbnail on the contact sheet.
    assert all(s.segment and s.segment.thumb for s in result.shots)

    # Off: every clip is re-encoded, and that is another output (another render key).
    off = render(brief, seconds=8, size="640x360", audio=True,
                 settings=settings(tmp_path / "a", copy_matching=False))
    assert all(s.cached for s in off.shots)  # the same clips: nothing paid again
    assert [s.segment.copied for s in off.shots if s.segment] == [False, False]
    assert _video_packets(off.output) != _video_packets(result.output)
