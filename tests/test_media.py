"""Probing, stitching, verification and stills, on small synthetic clips (see tests/clips.py).

The mismatched set covers what vendors send: 24/25/30 fps, landscape, portrait and 4:3, HEVC,
yuv444p, a 90 kHz time base, 44.1 kHz mono, no audio, audio shorter or longer than the video, and
audio that starts after or before it. Each clip has a white flash and a beep at exactly 1.0 s of
its picture, so sync can be measured in the output.
"""

from __future__ import annotations

import subprocess
from array import array
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image, ImageChops, ImageStat

from shotline.engine import media, normalise
from shotline.errors import MediaError

from .clips import BEEP_LEVEL, ffmpeg_exe, make_clip, make_vfr_clip

SIZE = (320, 180)
FPS = 24
MARKER = 1.0  # seconds into every marker clip
MARKER_FRAME = round(MARKER * FPS)
FLASH_LUMA = 200  # centre luma of the white box; testsrc2 stays far below it
DUPLICATE_DIFF = 0.5  # mean |ΔY| per pixel; a re-encoded duplicate scores ~0, motion ≥ several


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The mismatched clip set, made once per session; keys say what is odd about each."""
    d = tmp_path_factory.mktemp("clips")
    m = MARKER
    return {
        "plain": make_clip(d / "plain.mp4", seconds=2, size=SIZE, fps=24, audio=(48000, 2), marker_at=m),
        "short_audio": make_clip(d / "short_audio.mp4", seconds=2, size=(320, 240), fps=24,
                                 audio=(48000, 2), audio_seconds=1.5, marker_at=m),
        "portrait_hevc_mono": make_clip(d / "portrait.mp4", seconds=2, size=(180, 320), fps=25,
                                        codec="hevc", audio=(44100, 1), marker_at=m),
        "yuv444_silent": make_clip(d / "yuv444.mp4", seconds=2, size=SIZE, fps=30,
                                   pix_fmt="yuv444p", marker_at=m),
        "long_audio": make_clip(d / "long_audio.mp4", seconds=2, size=SIZE, fps=24,
                                audio=(48000, 2), audio_seconds=2.5, marker_at=m),
        "late_audio_90k": make_clip(d / "late_audio.mp4", seconds=2, size=SIZE, fps=24,
                                    audio=(48000, 1), audio_delay=0.25, timescale=90000, marker_at=m),
        "early_audio": make_clip(d / "early_audio.mp4", seconds=2, size=SIZE, fps=25,
                                 audio=(48000, 2), audio_delay=-0.2, marker_at=m),
    }


ORDER = ["plain", "short_audio", "portrait_hevc_mono", "yuv444_silent", "long_audio"]
HAS_AUDIO = {"plain": True, "short_audio": True, "portrait_hevc_mono": True,
             "yuv444_silent": False, "long_audio": True, "late_audio_90k": True, "early_audio": True}


# --------------------------------------------------------------------------- analysis


def gray_frames(path: Path) -> Iterator[Image.Image]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            plane = frame.reformat(format="gray").planes[0]
            yield Image.frombytes("L", (plane.width, plane.height), bytes(plane), "raw", "L",
                                  plane.line_size, 1)


def centre_luma(image: Image.Image) -> float:
    w, h = image.size
    return float(ImageStat.Stat(image.crop((w // 2 - 20, h // 2 - 20, w // 2 + 20, h // 2 + 20))).mean[0])


def flash_frames(lumas: list[float]) -> list[int]:
    """Indices of frames where a flash starts."""
    return [i for i, y in enumerate(lumas) if y > FLASH_LUMA and (i == 0 or lumas[i - 1] <= FLASH_LUMA)]


def mono_samples(path: Path) -> tuple[float, array[int]]:
    """The first decoded audio time and the whole track as 48 kHz mono s16."""
    samples: array[int] = array("h")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
    start: float | None = None
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            if start is None:
                start = float(frame.time or 0.0)
            for out in resampler.resample(frame):
                samples.frombytes(bytes(out.planes[0])[: out.samples * 2])
        for out in resampler.resample(None):
            samples.frombytes(bytes(out.planes[0])[: out.samples * 2])
    return start or 0.0, samples


def beep_onsets(path: Path) -> list[float]:
    """Times (s) where the beep starts: the first sample above 30 % of its level after 0.1 s of hum."""
    start, samples = mono_samples(path)
    threshold = 0.3 * BEEP_LEVEL * 32767  # a mono source upmixed to stereo and back loses 3 dB
    onsets: list[float] = []
    last_loud = -48000
    for i, x in enumerate(samples):
        if abs(x) > threshold:
            if i - last_loud > 4800:
                onsets.append(start + i / 48000)
            last_loud = i
    return onsets


def segment_starts(frames: list[int], crossfade: int) -> list[int]:
    starts, at = [], 0
    for n in frames:
        starts.append(at)
        at += n - crossfade
    return starts


def check_output(out: Path, names: list[str], frames: list[int], crossfade: int) -> None:
    """Sync at every join, markers where they belong, and no repeated frame anywhere."""
    images = list(gray_frames(out))
    assert len(images) == sum(frames) - (len(frames) - 1) * crossfade
    pairs = zip(images, images[1:], strict=False)
    diffs = [ImageStat.Stat(ImageChops.difference(a, b)).mean[0] for a, b in pairs]
    frozen = [(i + 1, round(d, 3)) for i, d in enumerate(diffs) if d < DUPLICATE_DIFF]
    assert not frozen, f"repeated frames (index, mean |ΔY|): {frozen}"

    flashes = flash_frames([centre_luma(im) for im in images])
    expected = [s + MARKER_FRAME for s in segment_starts(frames, crossfade)]
    assert flashes == expected, "each clip's flash should land on its own frame 24"

    beeps = beep_onsets(out)
    with_audio = [f for f, name in zip(expected, names, strict=True) if HAS_AUDIO[name]]
    assert len(beeps) == len(with_audio), beeps
    for flash, beep in zip(with_audio, beeps, strict=True):
        assert abs(beep - flash / FPS) <= 1 / FPS, f"beep at {beep:.4f} s, flash at {flash / FPS:.4f} s"


# --------------------------------------------------------------------------- probe


@pytest.mark.slow
def test_probe_reports_generated_clips(clips: dict[str, Path]) -> None:
    plain = media.probe(clips["plain"])
    assert (plain.width, plain.height, plain.fps, plain.frames) == (320, 180, Fraction(24), 48)
    assert (plain.video_codec, plain.pix_fmt) == ("h264", "yuv420p")
    assert abs(plain.duration - 2.0) < 1e-6
    assert (plain.has_audio, plain.audio_codec, plain.audio_rate, plain.audio_channels) == (
        True, "aac", 48000, 2)

    portrait = media.probe(clips["portrait_hevc_mono"])
    assert (portrait.width, portrait.height, portrait.fps, portrait.frames) == (180, 320, Fraction(25), 50)
    assert portrait.video_codec == "hevc"
    assert (portrait.audio_rate, portrait.audio_channels) == (44100, 1)

    silent = media.probe(clips["yuv444_silent"])
    assert (silent.fps, silent.frames, silent.pix_fmt) == (Fraction(30), 60, "yuv444p")
    assert not silent.has_audio and silent.audio_codec is None and silent.audio_duration is None

    short = media.probe(clips["short_audio"])
    assert short.audio_duration is not None and abs(short.audio_duration - 1.5) < 0.025
    assert abs(short.duration - 2.0) < 1e-6, "duration is the video's, not the audio's"

    quick = media.probe(clips["portrait_hevc_mono"], count_frames=False)
    assert quick.frames == 50 and quick.path == clips["portrait_hevc_mono"]


@pytest.mark.slow
@pytest.mark.parametrize("faststart", [True, False], ids=["moov-first", "moov-last"])
@pytest.mark.parametrize("count_frames", [True, False])
def test_probe_rejects_truncated_file(tmp_path: Path, faststart: bool, count_frames: bool) -> None:
    whole = make_clip(tmp_path / "whole.mp4", seconds=1, size=SIZE, audio=(48000, 2), faststart=faststart)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.mp4: not a decodable video"):
        media.probe(cut, count_frames=count_frames)


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40],
                         ids=["empty", "garbage"])
def test_probe_rejects_unreadable_file(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(MediaError, match=r"bad\.mp4: not a decodable video"):
        media.probe(bad)


def test_probe_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"nope\.mp4: not a decodable video: no such file"):
        media.probe(tmp_path / "nope.mp4")


@pytest.mark.slow
def test_probe_rejects_audio_only_file(tmp_path: Path) -> None:
    sound = tmp_path / "sound.m4a"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "aac",
                    str(sound)], check=True)
    with pytest.raises(MediaError, match="no video stream"):
        media.probe(sound)


# --------------------------------------------------------------------------- stitch


@pytest.mark.slow
def test_stitch_mismatched_clips_concat(clips: dict[str, Path], tmp_path: Path) -> None:
    frames = [40, 45, 37, 44, 47]  # none is a clip's natural 48 frames
    segments = [media.Segment(clips[n], f) for n, f in zip(ORDER, frames, strict=True)]
    progress: list[float] = []
    out = tmp_path / "joined.mp4"
    result = media.stitch(segments, out, size=SIZE, fps=FPS, audio=True, on_progress=progress.append)
    assert result.path == out and result.frames == 213
    assert abs(result.duration - 213 / FPS) < 1 / FPS
    media.verify(out, size=SIZE, fps=FPS, frames=213, audio=True)
    check_output(out, ORDER, frames, crossfade=0)
    assert progress and progress[-1] == 1.0 and progress == sorted(progress)
    assert [p.name for p in tmp_path.iterdir()] == ["joined.mp4"], "the temp file was left behind"


@pytest.mark.slow
def test_stitch_mismatched_clips_crossfade(clips: dict[str, Path], tmp_path: Path) -> None:
    frames, crossfade = [44, 47, 40, 46, 45], 6
    segments = [media.Segment(clips[n], f) for n, f in zip(ORDER, frames, strict=True)]
    out = tmp_path / "faded.mp4"
    result = media.stitch(segments, out, size=SIZE, fps=FPS, audio=True, crossfade_frames=crossfade)
    assert result.frames == sum(frames) - 4 * crossfade == 198
    media.verify(out, size=SIZE, fps=FPS, frames=198, audio=True)
    check_output(out, ORDER, frames, crossfade)


@pytest.mark.slow
def test_stitch_to_a_target_with_fit_frames(clips: dict[str, Path], tmp_path: Path) -> None:
    # Audio that starts after, or before, its video must keep its place against the picture.
    names = ["late_audio_90k", "yuv444_silent", "early_audio", "short_audio"]
    probes = [media.probe(clips[n]) for n in names]
    frames = media.fit_frames(probes, FPS, 7.0, crossfade_frames=4)
    assert frames == [48, 48, 48, 36]  # 168 target frames + 3 overlaps of 4
    out = tmp_path / "target.mp4"
    result = media.stitch([media.Segment(clips[n], f) for n, f in zip(names, frames, strict=True)], out,
                          size=SIZE, fps=FPS, audio=True, crossfade_frames=4)
    assert result.frames == round(7.0 * FPS) == 168
    check_output(out, names, frames, crossfade=4)


@pytest.mark.slow
def test_stitch_single_segment_crop_no_audio_pads_one_frame(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "one.mp4"
    # 49 frames from a 48-frame clip: within the one-frame slack, so the last frame is held.
    result = media.stitch([media.Segment(clips["portrait_hevc_mono"], 49)], out, size=(160, 160),
                          fps=FPS, audio=False, fit="crop", preset="ultrafast")
    assert (result.frames, result.width, result.height, result.has_audio) == (49, 160, 160, False)
    with av.open(str(out)) as container:
        assert not container.streams.audio
    images = list(gray_frames(out))
    # Cropping a portrait clip to a square fills the frame: no black bars on the sides.
    assert min(ImageStat.Stat(images[10].crop((0, 0, 8, 160))).mean[0],
               ImageStat.Stat(images[10].crop((152, 0, 160, 160))).mean[0]) > 20


@pytest.mark.slow
def test_stitch_letterboxes_portrait_with_black_bars(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "box.mp4"
    media.stitch([media.Segment(clips["portrait_hevc_mono"], 12)], out, size=SIZE, fps=FPS,
                 audio=True, preset="ultrafast")
    image = next(gray_frames(out))
    left, right = image.crop((0, 0, 100, 180)), image.crop((220, 0, 320, 180))
    assert ImageStat.Stat(left).extrema[0][1] < 24 and ImageStat.Stat(right).extrema[0][1] < 24
    assert ImageStat.Stat(image.crop((140, 0, 180, 180))).mean[0] > 40


@pytest.mark.slow
def test_stitch_rejects_segment_longer_than_its_clip(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "never.mp4"
    segments = [media.Segment(clips["plain"], 40), media.Segment(clips["yuv444_silent"], 200)]
    message = r"yuv444\.mp4: asked for 200 frames at 24 fps but the clip has only 48"
    with pytest.raises(MediaError, match=message):
        media.stitch(segments, out, size=SIZE, fps=FPS, audio=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_stitch_rejects_crossfade_not_shorter_than_a_segment(clips: dict[str, Path], tmp_path: Path) -> None:
    segments = [media.Segment(clips["plain"], 40), media.Segment(clips["plain"], 8)]
    with pytest.raises(MediaError, match="8-frame crossfade needs a segment longer than its 8 frames"):
        media.stitch(segments, tmp_path / "x.mp4", size=SIZE, fps=FPS, audio=True, crossfade_frames=8)
    assert list(tmp_path.iterdir()) == []


def test_stitch_rejects_an_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="preset 'bogus': use one of ultrafast,"):
        media.stitch([media.Segment(tmp_path / "a.mp4", 10)], tmp_path / "o.mp4", size=SIZE,
                     fps=FPS, audio=True, preset="bogus")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_failed_encode_leaves_no_file(clips: dict[str, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalise, "CRF", "bogus")  # ffmpeg itself refuses the encode
    out = tmp_path / "fail.mp4"
    with pytest.raises(MediaError, match=r"ffmpeg failed \(exit \d+\):\n(.|\n)*bogus"):
        media.stitch([media.Segment(clips["plain"], 10)], out, size=SIZE, fps=FPS, audio=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_failed_verification_leaves_no_file(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reject(path: Path, **_: object) -> media.Probe:
        assert path.exists() and path.parent == tmp_path
        raise MediaError("verification failed on purpose")

    monkeypatch.setattr(media, "verify", reject)
    out = tmp_path / "fail.mp4"
    with pytest.raises(MediaError, match="on purpose"):
        media.stitch([media.Segment(clips["plain"], 10)], out, size=SIZE, fps=FPS, audio=True,
                     preset="ultrafast")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_stitch_honours_non_square_pixels(tmp_path: Path) -> None:
    # 240x180 stored, 4:3 pixels: a 320x180 picture. Fitted into 320x180 it needs no bars at all.
    wide = make_clip(tmp_path / "anamorphic.mp4", seconds=1, size=(240, 180), sar="4/3")
    out = tmp_path / "out.mp4"
    media.stitch([media.Segment(wide, 12)], out, size=SIZE, fps=FPS, audio=False, preset="ultrafast")
    image = next(gray_frames(out))
    assert ImageStat.Stat(image.crop((0, 0, 6, 180))).mean[0] > 20
    assert ImageStat.Stat(image.crop((314, 0, 320, 180))).mean[0] > 20
    with Image.open(media.poster(wide, tmp_path / "p.png")) as still:
        assert still.size == SIZE


@pytest.mark.slow
def test_a_raising_progress_callback_stops_the_stitch(clips: dict[str, Path], tmp_path: Path) -> None:
    def boom(fraction: float) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        media.stitch([media.Segment(clips["plain"], 24)], tmp_path / "o.mp4", size=SIZE, fps=FPS,
                     audio=True, preset="ultrafast", on_progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_only_the_wheels_ffmpeg_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import imageio_ffmpeg

    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: "/usr/bin/ffmpeg")
    with pytest.raises(MediaError, match="not its own binary"):
        media.ffmpeg_exe()


def test_stitch_rejects_odd_size_before_anything(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="must be even"):
        media.stitch([media.Segment(tmp_path / "a.mp4", 1)], tmp_path / "o.mp4", size=(321, 180),
                     fps=FPS, audio=False)


# --------------------------------------------------------------------------- verify


@pytest.mark.slow
def test_verify_names_every_failed_check(clips: dict[str, Path]) -> None:
    with pytest.raises(MediaError) as caught:
        media.verify(clips["portrait_hevc_mono"], size=SIZE, fps=24, frames=48, audio=True)
    message = str(caught.value)
    for check in ("video codec: hevc", "size: 180x320", "frame count: 50, want 48",
                  "frame timing", "audio rate: 44100", "audio channels: 1"):
        assert check in message


@pytest.mark.slow
def test_verify_rejects_variable_frame_rate(tmp_path: Path) -> None:
    vfr = make_vfr_clip(tmp_path / "vfr.mp4", seconds=1)
    with pytest.raises(MediaError, match=r"frame timing: frame 2 is 51\.67 ms after") as caught:
        media.verify(vfr, size=SIZE, fps=24, frames=24, audio=False)
    assert "frame count" not in str(caught.value)


@pytest.mark.slow
def test_verify_rejects_missing_faststart(tmp_path: Path) -> None:
    slow_start = make_clip(tmp_path / "late_moov.mp4", seconds=1, size=SIZE, faststart=False)
    with pytest.raises(MediaError, match="faststart: moov comes after mdat") as caught:
        media.verify(slow_start, size=SIZE, fps=24, frames=24, audio=False)
    assert caught.value.args[0].count(";") == 0, "only the faststart check should fail"


@pytest.mark.slow
def test_verify_audio_expectations(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="audio streams: 1, want none"):
        media.verify(clips["plain"], size=SIZE, fps=24, frames=48, audio=False)
    with pytest.raises(MediaError, match="audio streams: 0, want 1"):
        media.verify(clips["yuv444_silent"], size=SIZE, fps=30, frames=60, audio=True)
    out = tmp_path / "mismatch.mp4"
    media.stitch([media.Segment(clips["long_audio"], 48)], out, size=SIZE, fps=FPS, audio=True,
                 preset="ultrafast")
    # The source's audio runs 0.5 s past its video; the source fails, the stitched output does not.
    drift = r"audio/video drift: audio ends at 2\.5000 s, video at 2\.0000 s \(500\.0 ms apart"
    with pytest.raises(MediaError, match=drift):
        media.verify(clips["long_audio"], size=SIZE, fps=24, frames=48, audio=True)
    assert media.verify(out, size=SIZE, fps=FPS, frames=48, audio=True).audio_duration is not None


# --------------------------------------------------------------------------- fit_frames


def fake_probe(seconds: float, fps: int = 24) -> media.Probe:
    return media.Probe(
        path=Path(f"clip{seconds}.mp4"), duration=seconds, width=640, height=360, fps=Fraction(fps),
        frames=round(seconds * fps), video_codec="h264", pix_fmt="yuv420p", has_audio=False,
        audio_codec=None, audio_rate=None, audio_channels=None, audio_duration=None,
    )


def test_fit_frames_without_target_takes_whole_clips_floored() -> None:
    probes = [fake_probe(5.0), fake_probe(4.99), fake_probe(6.03, fps=25)]
    assert media.fit_frames(probes, 24, None) == [120, 119, 144]
    # Millisecond timestamps (Matroska) read 2 s as 1.999 s: that is rounding, not a lost frame.
    assert media.fit_frames([fake_probe(1.999)], 24, None) == [48]


def test_fit_frames_cuts_the_excess_from_the_end() -> None:
    probes = [fake_probe(5.0), fake_probe(5.0), fake_probe(5.0)]
    assert media.fit_frames(probes, 24, 12.0) == [120, 120, 48]
    assert media.fit_frames(probes, 24, 12.01) == [120, 120, 48]  # round(288.24) == 288
    assert media.fit_frames(probes, 24, 15.0) == [120, 120, 120]


def test_fit_frames_counts_crossfade_overlaps() -> None:
    probes = [fake_probe(5.0), fake_probe(5.0), fake_probe(5.0)]
    frames = media.fit_frames(probes, 24, 12.0, crossfade_frames=12)
    assert frames == [120, 120, 72]
    assert sum(frames) - 2 * 12 == 288


def test_fit_frames_shortens_several_clips_when_the_last_is_not_enough() -> None:
    probes = [fake_probe(5.0), fake_probe(5.0), fake_probe(1.0)]
    # 264 frames, 120 too many: the last clip goes down to one frame, the middle one gives the rest.
    assert media.fit_frames(probes, 24, 6.0) == [120, 23, 1]
    # With a crossfade no clip may drop to the crossfade's length or below.
    assert media.fit_frames(probes, 24, 6.0, crossfade_frames=4) == [120, 27, 5]


def test_fit_frames_too_short_for_target() -> None:
    probes = [fake_probe(2.0), fake_probe(3.0)]
    with pytest.raises(MediaError, match=r"clips are too short: they give 5\.000 s .* 6\.000 s"):
        media.fit_frames(probes, 24, 6.0)
    with pytest.raises(MediaError, match="too short"):
        media.fit_frames(probes, 24, 5.0, crossfade_frames=6)  # 120 - 6 = 114 < 120


def test_fit_frames_crossfade_longer_than_a_clip() -> None:
    with pytest.raises(MediaError, match="too short for a 24-frame crossfade"):
        media.fit_frames([fake_probe(5.0), fake_probe(0.5)], 24, None, crossfade_frames=24)


def test_fit_frames_target_too_short_for_every_clip() -> None:
    with pytest.raises(MediaError, match="too short to show all 3 clips"):
        media.fit_frames([fake_probe(5.0)] * 3, 24, 0.05)


# --------------------------------------------------------------------------- stills


@pytest.mark.slow
def test_poster_is_the_frame_at_the_requested_time(clips: dict[str, Path], tmp_path: Path) -> None:
    default = media.poster(clips["plain"], tmp_path / "poster.jpg")
    with Image.open(default) as image:
        assert (image.format, image.size) == ("JPEG", SIZE)
    flash = media.poster(clips["plain"], tmp_path / "flash.png", at=MARKER + 0.05)
    before = media.poster(clips["plain"], tmp_path / "before.png", at=MARKER - 0.1)
    with Image.open(flash) as lit, Image.open(before) as dark:
        assert lit.format == "PNG"
        assert centre_luma(lit.convert("L")) > FLASH_LUMA > centre_luma(dark.convert("L"))


@pytest.mark.slow
def test_contact_sheet_tiles_one_frame_per_time(clips: dict[str, Path], tmp_path: Path) -> None:
    sheet = media.contact_sheet(clips["portrait_hevc_mono"], tmp_path / "sheet.jpg",
                                times=[0.1, 0.5, 1.05, 1.5, 1.9], columns=4, thumb_width=90)
    with Image.open(sheet) as image:
        assert image.size == (4 * 90, 2 * 160)
        tile = image.convert("L").crop((180, 0, 270, 160))  # the third time, 1.05 s: the flash
        assert centre_luma(tile) > FLASH_LUMA
