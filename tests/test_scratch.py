"""Temporary files: a killed process's are removed by the next one, a live one's never."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shotline import scratch
from shotline.providers.local import LocalProvider
from shotline.settings import Settings

from .test_durability import cli

TEMP = re.compile(r"\.part(\.[A-Za-z0-9]+)?$")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if TEMP.search(p.name))


def test_sweep_removes_what_dead_or_old_writers_left_and_nothing_else(tmp_path: Path) -> None:
    gone, me = dead_pid(), os.getpid()
    (tmp_path / "clips" / "ab").mkdir(parents=True)
    dead = tmp_path / "clips" / "ab" / f".abc.mp4.{gone}-0123456789ab.part"
    dead_dir = tmp_path / f".render.{gone}-abcd_xyz.part"
    mine = tmp_path / f".out.mp4.{me}-0123456789ab.part.mp4"
    old = tmp_path / f".old.jpg.{me}-fedcba987654.part.jpg"
    kept = [tmp_path / "clips" / "ab" / "abc.mp4", tmp_path / ".hidden", tmp_path / "x.part"]
    dead_dir.mkdir()
    (dead_dir / "canvas.png").write_bytes(b"png")
    for path in (dead, mine, old, *kept):
        path.write_bytes(b"data")
    os.utime(old, (time.time() - 2 * scratch.MAX_AGE,) * 2)
    assert scratch.sweep(tmp_path) == 3
    assert not dead.exists() and not dead_dir.exists() and not old.exists()
    assert mine.exists() and all(p.exists() for p in kept)


def test_a_folder_that_is_not_ours_is_swept_only_for_one_file(tmp_path: Path) -> None:
    gone = dead_pid()
    ours = tmp_path / f".teaser.mp4.{gone}-0123456789ab.part"
    theirs = tmp_path / f".other.mp4.{gone}-0123456789ab.part"
    deeper = tmp_path / "sub" / f".teaser.mp4.{gone}-0123456789ab.part"
    deeper.parent.mkdir()
    for path in (ours, theirs, deeper):
        path.write_bytes(b"x")
    assert scratch.sweep(tmp_path, recursive=False, prefix="teaser.") == 1
    assert not ours.exists() and theirs.exists() and deeper.exists()


def test_temporary_names_are_recognised(tmp_path: Path) -> None:
    for name in (scratch.name("clip.mp4"), scratch.name("out.mp4", ".mp4"),
                 scratch.name("poster.jpg", ".jpg")):
        assert re.match(rf"^\..+\.{os.getpid()}-[0-9a-f]{{12}}\.part", name), name
        (tmp_path / name).write_bytes(b"x")
    assert scratch.sweep(tmp_path, max_age=-1) == 3  # older than "now": every one goes


def test_the_local_vendor_sweeps_its_own_scratch(tmp_path: Path) -> None:
    out = tmp_path / "local" / "out"
    out.mkdir(parents=True)
    left = out / f".loc_{'0' * 32}.mp4.{dead_pid()}-0123456789ab.part.mp4"
    left.write_bytes(b"half a clip")
    LocalProvider(Settings(home=tmp_path))
    assert not left.exists()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["downloaded", "stitched"])
def test_a_killed_render_leaves_nothing_once_the_next_one_runs(
        tmp_path: Path, point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL right after a download (the clip is still a temporary file) or a stitch,
    in a batch of three at once: the next run resumes and leaves no temporary file."""
    # Nine shots for four provider slots: a killed process's slots stay taken until their
    # lease lapses (its vendor jobs may still be running), so the last process waits that long.
    monkeypatch.setenv("SHOTLINE_LEASE_SECONDS", "3")
    home = tmp_path / "h"
    killed = [cli(home, kill_at=point, background=True, brief=brief) for brief in (
        "Shot 1: A red kite rises.\nShot 2: A blue kite dips.\nShot 3: Both kites tangle.\n",
        "Shot 1: A gull dives.\nShot 2: A boat turns.\nShot 3: The harbour sleeps.\n",
        "Shot 1: Rain on a tin roof.\nShot 2: A cat watches.\nShot 3: The rain stops.\n")]
    for proc in killed:
        proc.communicate(timeout=120)
        assert proc.returncode == -9, proc.returncode
    if point == "downloaded":  # each process died holding one downloaded, unstored clip
        assert len([p for p in leftovers(home) if "clips" in p.parts]) >= 3, leftovers(home)
    resumed = cli(home)
    assert resumed.returncode == 0, resumed.stderr
    assert leftovers(home) == []


def test_production_code_reads_no_kill_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill points are armed by the tests' own entry point (tests/killpoint.py): a variable
    set by mistake on a worker does nothing."""
    from shotline.engine import renderer

    src = Path(renderer.__file__).resolve().parents[1]
    assert not [p for p in src.rglob("*.py") if "SHOTLINE_TEST" in p.read_text("utf-8")]
    monkeypatch.setenv("SHOTLINE_TEST_KILL_AT", "claimed")
    for point in ("claimed", "submitted", "downloaded", "done", "stitched"):
        renderer.checkpoint(point)  # still alive
