"""Segments made one clip at a time and joined by copy: sync, loudness, the copy path, flags."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import av
import pytest

from shotline.engine import media, sound
from shotline.engine.assembly import Assembly, stitch_files
from shotline.engine.normalise import Format
from shotline.engine.seams import AAC_FRAME, AUDIO_RATE, samples_at
from shotline.store.cache import Pieces

from .clips import make_clip
from .test_media import beep_onsets, centre_luma, flash_frames, gray_frames

pytestmark = pytest.mark.slow

SMALL = (160, 90)
FPS = 24


def video_payload(path: Path) -> list[str]:
    """A digest of every video packet's bytes, in decode order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [hashlib.sha256(bytes(p)).hexdigest() for p in container.demux(stream) if p.size]


def test_forty_segments_keep_sound_on_the_picture(tmp_path: Path) -> None:
    # One clip used 40 times, 29 frames each (58000 samples: never a whole number of AAC
    # frames), so every cut lands somewhere else on the 1024-sample grid.
    clip = make_clip(tmp_path / "marker.mp4", seconds=1.25, size=SMALL, fps=FPS,
                     audio=(48000, 2), marker_at=0.5)
    out = tmp_path / "forty.mp4"
    joined = stitch_files([media.Segment(clip, 29)] * 40, out,
                          Format(size=SMALL, fps=FPS, audio=True, preset="ultrafast"),
                          loudness=None)
    frames = 40 * 29
    assert joined.probe.frames == frames
    # The sound is exactly as long as the picture: not one sample of drift accumulated.
    assert joined.probe.audio_duration == pytest.approx(frames / FPS, abs=1 / AUDIO_RATE)
    flashes = flash_frames([centre_luma(im) for im in gray_frames(out)])
    assert flashes == [k * 29 + 12 for k in range(40)]
    beeps = beep_onsets(out)
    assert len(beeps) == 40
    worst = max(abs(beep - flash / FPS) for beep, flash in zip(beeps, flashes, strict=True))
    assert worst <= AAC_FRAME / AUDIO_RATE, f"beep and flash {worst * 1000:.1f} ms apart"
    # ...and in fact sample-exact, give or take the beep detector's first loud sample.
    assert abs(beeps[-1] - flashes[-1] / FPS) < 0.002


def shot_loudness(path: Path, start: int, frames: int) -> float:
    """Integrated loudness of one shot in an output, its edges (the cut's silence) left out."""
    edge = AUDIO_RATE // 10
    first = samples_at(start, FPS) + edge
    heard = sound.Sound(sound.Source(path, 1, 0.0))
    level = sound.measure(heard, samples_at(frames, FPS) - 2 * edge, first)
    assert level.integrated is not None
    return level.integrated


def test_every_shot_is_brought_to_one_loudness(tmp_path: Path) -> None:
    hums = [0.01, 0.08, 0.5]  # about 34 dB from the quietest to the loudest
    clips = [make_clip(tmp_path / f"hum{i}.mp4", seconds=2, size=SMALL, fps=FPS, audio=(48000, 2),
                       hum=hum) for i, hum in enumerate(hums)]
    out = tmp_path / "level.mp4"
    fmt = Format(size=SMALL, fps=FPS, audio=True, preset="ultrafast")
    stitch_files([media.Segment(c, 48) for c in clips], out, fmt, loudness=-16.0)
    levels = [shot_loudness(out, k * 48, 48) for k in range(3)]
    assert max(levels) - min(levels) <= 1.0, levels
    assert all(abs(level + 16) <= 1.0 for level in levels), levels
    peak = sound.true_peak(sound.Sound(sound.Source(out, 1, 0.0)), samples_at(144, FPS))
    assert peak is not None and peak <= -1.0
    # Without a target the levels stay as they were: the quietest shot far below the loudest.
    plain = tmp_path / "plain.mp4"
    stitch_files([media.Segment(c, 48) for c in clips], plain, fmt, loudness=None)
    raw = [shot_loudness(plain, k * 48, 48) for k in range(3)]
    assert raw[2] - raw[0] > 25


def test_clips_that_already_match_are_copied_not_encoded(tmp_path: Path) -> None:
    clips = [make_clip(tmp_path / f"m{i}.mp4", seconds=1 + i / 2, size=SMALL, fps=FPS,
                       audio=(44100, 1)) for i in range(3)]
    fmt = Format(size=SMALL, fps=FPS, audio=True)
    out = tmp_path / "copied.mp4"
    counts = [media.probe(c, count_frames=False).frames for c in clips]
    joined = stitch_files([media.Segment(c, n) for c, n in zip(clips, counts, strict=True)],
                          out, fmt, loudness=-16.0)
    assert joined.copied
    # The very bytes of every clip's video, in order: nothing was decoded or encoded.
    assert video_payload(out) == [h for c in clips for h in video_payload(c)]
    media.verify(out, size=SMALL, fps=FPS, frames=sum(counts), audio=True, decode=True)

    # One clip of another size: everything is normalised instead.
    odd = make_clip(tmp_path / "odd.mp4", seconds=1, size=(320, 180), fps=FPS, audio=(48000, 2))
    mixed = stitch_files([media.Segment(clips[0], counts[0]), media.Segment(odd, 24)],
                         tmp_path / "mixed.mp4", fmt, loudness=-16.0)
    assert not mixed.copied
    assert video_payload(tmp_path / "mixed.mp4")[:counts[0]] != video_payload(clips[0])


def test_pieces_are_kept_by_key_and_reused(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=2, size=SMALL, fps=FPS, audio=(48000, 2))
    fmt = Format(size=SMALL, fps=FPS, audio=True, preset="ultrafast")
    pieces = Pieces(tmp_path / "pieces")
    first = Assembly([40, 30], fmt, pieces, loudness=-16.0)
    made = [first.prepare(k, clip, "shot:a") for k in range(2)]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "pieces").rglob("*.mp4")}
    # The same shot in another render, at the same length: its video piece is the same file.
    second = Assembly([40, 50], fmt, pieces, loudness=-16.0)
    again = second.prepare(0, clip, "shot:a")
    assert again.video == made[0].video and again.sound == made[0].sound
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "nothing was encoded again"
    # Another take is another identity: new pieces.
    assert second.prepare(0, clip, "shot:b").video != made[0].video


@pytest.mark.parametrize("copy", [False, True], ids=["normalised", "copied"])
def test_quality_flags_name_black_frozen_silent_and_letterboxed_shots(tmp_path: Path,
                                                                      copy: bool) -> None:
    made = {
        "black": make_clip(tmp_path / "black.mp4", seconds=2, size=SMALL, picture="black",
                           audio=(48000, 2)),
        "still": make_clip(tmp_path / "still.mp4", seconds=2, size=SMALL, picture="still",
                           audio=(48000, 2)),
        "hushed": make_clip(tmp_path / "hushed.mp4", seconds=2, size=SMALL, audio=(48000, 2),
                            hum=0),
        "mute": make_clip(tmp_path / "mute.mp4", seconds=2, size=SMALL),
        "bars": make_clip(tmp_path / "bars.mp4", seconds=2, size=SMALL, bars=12,
                          audio=(48000, 2)),
        "fine": make_clip(tmp_path / "fine.mp4", seconds=2, size=SMALL, audio=(48000, 2)),
    }
    fmt = Format(size=SMALL, fps=FPS, audio=True, preset="ultrafast")
    # As in a render: every clip looked at as it arrives, whether it is normalised or (being
    # in the output's format already) copied as it is and only decoded for the checks.
    assembly = Assembly([48] * len(made), fmt, Pieces(tmp_path / "pieces"), loudness=-16.0,
                        copy_matching=copy)
    prepared = [assembly.prepare(k, clip, f"shot:{k}", asked=2.0)
                for k, clip in enumerate(made.values())]
    assert [p.copied for p in prepared] == [copy] * len(made)
    assert all(p.thumb is not None and p.thumb.stat().st_size > 0 for p in prepared)
    joined = assembly.join(prepared, tmp_path / "q.mp4")
    found = {(f.shot, f.kind, f.severity) for f in joined.flags}
    assert found == {(1, "black", "fail"), (2, "frozen", "fail"), (3, "silent", "fail"),
                     (4, "silent", "fail"), (5, "letterbox", "warn")}
    black = next(f for f in joined.flags if f.kind == "black")
    assert (black.start, black.end) == pytest.approx((0.0, 2.0))
    frozen = next(f for f in joined.flags if f.kind == "frozen")
    # An encoder settles on a still picture over a few frames; the freeze is found after them.
    assert frozen.start == pytest.approx(2.0, abs=0.5) and frozen.end == pytest.approx(4.0, abs=0.05)
    assert "no sound" in next(f.message for f in joined.flags if f.shot == 4)
    # Flags are the shots' own, placed on the output.
    assert [f.shot for f in joined.segments[0].flags] == [None]


def test_a_render_copies_matching_clips_unless_they_cannot_share_one_stream(
        tmp_path: Path) -> None:
    fmt = Format(size=SMALL, fps=FPS, audio=True, preset="ultrafast")
    a = make_clip(tmp_path / "a.mp4", seconds=1, size=SMALL, fps=FPS, audio=(48000, 2))
    b = make_clip(tmp_path / "b.mp4", seconds=1, size=SMALL, fps=FPS, audio=(44100, 1),
                  picture="still")
    assembly = Assembly([24, 24], fmt, Pieces(tmp_path / "pieces"), loudness=-16.0,
                        copy_matching=True)
    both = [assembly.prepare(k, clip, f"shot:{k}") for k, clip in enumerate((a, b))]
    joined = assembly.join(both, tmp_path / "copied.mp4")
    assert joined.copied and [s.copied for s in joined.segments] == [True, True]
    assert video_payload(tmp_path / "copied.mp4") == video_payload(a) + video_payload(b)

    # Each case below would make one stream of two kinds of codec parameters: the copied
    # clips are normalised at the join instead, and the output is whole.
    other_size = make_clip(tmp_path / "big.mp4", seconds=1, size=(320, 180), fps=FPS,
                           audio=(48000, 2))
    other_clock = make_clip(tmp_path / "tb.mp4", seconds=1, size=SMALL, fps=FPS,
                            audio=(48000, 2), timescale=90000)
    turned = tmp_path / "turned.mp4"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90",
                    "-i", str(b), "-c", "copy", str(turned)], check=True)
    for second, copied in ((other_size, False), (other_clock, True), (turned, False)):
        mixed = Assembly([24, 24], fmt, Pieces(tmp_path / "pieces"), loudness=-16.0,
                         copy_matching=True)
        made = [mixed.prepare(0, a, "shot:0"), mixed.prepare(1, second, f"shot:{second.name}")]
        assert [m.copied for m in made] == [True, copied], second.name
        out = tmp_path / f"mixed-{second.name}"
        joined = mixed.join(made, out)
        assert not joined.copied and not any(s.copied for s in joined.segments), second.name
        media.verify(out, size=SMALL, fps=FPS, frames=48, audio=True, decode=True)
        assert video_payload(out)[:24] != video_payload(a)

    # Off: every clip is normalised as it arrives.
    off = Assembly([24], fmt, Pieces(tmp_path / "pieces"), copy_matching=False)
    assert not off.prepare(0, a, "shot:0").copied


def test_the_true_peak_is_read_only_when_the_sample_peak_cannot_decide(tmp_path: Path) -> None:
    fmt = Format(size=SMALL, fps=FPS, audio=True, preset="ultrafast")
    tone = make_clip(tmp_path / "tone.mp4", seconds=1, size=SMALL, audio=(48000, 2), hum=0.1)
    # A steady tone's samples peak about 3.5 dB above its loudness. Brought to -16 LUFS they
    # peak near -12.5 dBFS: under the limit whatever lies between them. To -8, near -4.5:
    # only the true peak tells. To -2, near +1.5: over it, and limited, with no need to ask.
    for target, read in ((-16.0, False), (-8.0, True), (-2.0, False)):
        pieces = tmp_path / f"pieces{target}"
        assembly = Assembly([24], fmt, Pieces(pieces), loudness=target, copy_matching=True)
        made = assembly.prepare(0, tone, "shot:tone")
        metas = [json.loads(p.read_text()) for p in pieces.rglob("*.json")]
        assert any("true_peak" in m for m in metas) == read, target
        # Either way the levelled sound stays under the limit (-1.5 dBTP).
        assert made.sound is not None
        peak = sound.true_peak(sound.Sound(sound.Source(made.sound, 0, 0.0)), 24 * 2000)
        assert peak is not None and peak <= -1.0, (target, peak)
