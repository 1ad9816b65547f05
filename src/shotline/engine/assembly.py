"""Assembling one output: each clip prepared as it arrives, then every piece joined by copy.

:meth:`Assembly.prepare` turns one clip into its segment: a video piece in the output's exact
format (:mod:`.normalise`), its piece of sound on the grid (:mod:`.seams`, :mod:`.sound`),
a thumbnail for the contact sheet, and its quality flags (:mod:`.quality`). A render calls
it for each shot the moment that shot's clip is stored, while the other shots still render;
:meth:`Assembly.join` then only copies packets (:mod:`.join`). Invariants:

* **Content-addressed.** Every piece is stored under a key of what it is made from: the
  clip's identity (its shot key in a render) and every setting that changes the bytes. A
  piece on disk is complete (it is written to a temporary name and renamed); its metadata
  JSON is written after it and is the mark that the piece is done. So a reopened render, a
  re-roll (only the new take's pieces are made) or a second stitch reuses them.
* **Memory does not grow with length.** A piece is made from one clip by one process; the
  join holds one input per stream at a time.
* **Verified before done.** The joined file is checked (:func:`.media.verify`) before it is
  moved to where it was asked for; a failure leaves nothing there.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..core.keys import digest
from ..errors import MediaError
from ..store.cache import Pieces
from . import media, quality, sound
from .join import Run, join
from .normalise import CRF, THUMB_WIDTH, Detections, Format, encode_video, encode_window
from .quality import Flag
from .seams import Place, layout, samples_at, total_frames

PIECE_VERSION = 1  # bump when a piece's bytes change for the same inputs
WORKERS = 2  # clips prepared at once by stitch_files


@dataclass(frozen=True)
class Prepared:
    """One segment, ready to be joined."""

    index: int
    video: Path  # the video piece (or the clip itself, when it is copied as it is)
    video_key: str
    stream: int  # the video stream in ``video``
    sound: Path | None
    thumb: Path | None  # the middle frame, for the contact sheet
    flags: tuple[Flag, ...] = ()
    loudness: float | None = None  # LUFS measured, before levelling
    gain: float = 0.0
    copied: bool = False


@dataclass(frozen=True)
class Joined:
    """A verified output and its flags (each shot's, placed on the output)."""

    probe: media.Probe
    flags: tuple[Flag, ...]
    copied: bool  # the clips' own video was copied, not re-encoded
    segments: tuple[Prepared, ...] = field(default_factory=tuple)


def _detections_json(d: Detections) -> dict[str, Any]:
    return {"black": d.black, "frozen": d.frozen, "content": d.content, "analysed": d.analysed}


def _detections(data: dict[str, Any]) -> Detections:
    return Detections(black=tuple((s, e) for s, e in data["black"]),
                      frozen=tuple((s, e) for s, e in data["frozen"]),
                      content=(data["content"][0], data["content"][1]) if data["content"] else None,
                      analysed=(data["analysed"][0], data["analysed"][1]))


@functools.cache
def encoder_version() -> str:
    """The ffmpeg binary pieces are encoded by: another build may write other codec
    parameters, and pieces from two builds must never meet in one join."""
    return Path(media.ffmpeg_exe()).name


def matches(found: media.Scan, frames: int, fmt: Format) -> bool:
    """Whether a clip's own video can be copied into the output as it is, whole."""
    info = found.probe
    step = Fraction(1, fmt.fps) / found.video_tb
    pts = sorted(found.packet_pts)
    return (
        info.video_codec == "h264" and info.pix_fmt == "yuv420p"
        and (info.width, info.height) == fmt.size and found.sar in (None, 0, 1)
        and info.fps == fmt.fps and step.denominator == 1
        and found.first_packet_key and bool(pts) and pts[0] == 0 and frames == len(pts)
        and all(b - a == step for a, b in zip(pts, pts[1:], strict=False))
    )


class Assembly:
    """Makes the segments of one output and joins them."""

    def __init__(self, frames: Sequence[int], fmt: Format, pieces: Pieces, *,
                 crossfade: int = 0, loudness: float | None = None, true_peak: float = -1.5,
                 encoders: int | None = None) -> None:
        fmt.check()
        if crossfade < 0:
            raise MediaError(f"crossfade_frames {crossfade}: must not be negative")
        self.fmt = fmt
        self.pieces = pieces
        self.crossfade = crossfade if len(frames) > 1 else 0
        for k, n in enumerate(frames):
            if n < 1:
                raise MediaError(f"segment {k + 1}: asked for {n} frames; at least 1 is needed")
            if self.crossfade >= n:
                raise MediaError(f"segment {k + 1}: a {self.crossfade}-frame crossfade needs a "
                                 f"segment longer than its {n} frames")
        self.places: list[Place] = layout(frames, fmt.fps, self.crossfade, audio=fmt.audio)
        self.loudness = loudness
        self.true_peak = true_peak
        # At most this many video pieces encode at once (each is an ffmpeg that uses every
        # core and, at 1080p, a few hundred MB); the sound, in-process, does not wait for one.
        self.encoders = threading.BoundedSemaphore(encoders) if encoders else None

    @property
    def frames(self) -> int:
        return total_frames([p.frames for p in self.places], self.crossfade)

    # ----------------------------------------------------------------------- one segment

    def prepare(self, index: int, clip: Path, identity: str, *, asked: float | None = None,
                copy: bool = False, thumb: bool = True, found: media.Scan | None = None,
                on_progress: Callable[[float], None] | None = None) -> Prepared:
        """Make (or find) segment ``index`` from ``clip``, whose identity is ``identity``.

        Blocks; the video piece (an ffmpeg process) is made while this thread makes the sound.
        ``found`` is the clip's :func:`.media.scan`, if the caller has it already.
        """
        place = self.places[index]
        found = found or media.scan(clip)
        available = media.available_frames(found.probe, self.fmt.fps)
        if place.frames > available + 1:
            raise MediaError(
                f"{clip.name}: asked for {place.frames} frames at {self.fmt.fps} fps but the clip "
                f"has only {available} ({found.probe.duration:.3f} s)")
        with ThreadPoolExecutor(1) as side:
            pending = None if copy else side.submit(self._video, found, identity, place, on_progress)
            sound_flags: list[Flag] = []
            level: sound.Level | None = None
            piece: Path | None = None
            gain = 0.0
            if self.fmt.audio:
                # Read once: measured, then levelled and encoded (with a grid frame of slack).
                heard = sound.Sound(self._source(found), max(samples_at(place.frames, self.fmt.fps),
                                                             place.offset + place.samples))
                level = self._level(heard, identity, place)
                sound_flags = quality.sound(found.audio_index is not None, level.integrated,
                                            level.silences, place.frames / self.fmt.fps)
                gain = level.gain(self.loudness)
                ceiling = None
                if self.loudness is not None and level.true_peak is not None and \
                        level.true_peak + gain > self.true_peak:
                    ceiling = self.true_peak
                piece = self._sound(heard, identity, place, gain, ceiling)
            if pending is None:
                video, video_key, stream = clip, identity, found.video_index
                detections: Detections | None = None
            else:
                video, video_key, detections = pending.result()
                stream = 0
        flags = self._picture_flags(found, detections, place, asked, available) + sound_flags
        still = self._thumb(video, video_key, place) if thumb else None
        return Prepared(index, video, video_key, stream, piece, still, tuple(flags),
                        loudness=level.integrated if level else None, gain=gain, copied=copy)

    def _video(self, found: media.Scan, identity: str, place: Place,
               on_progress: Callable[[float], None] | None) -> tuple[Path, str, Detections]:
        fmt = self.fmt
        key = digest({"v": PIECE_VERSION, "kind": "video", "clip": identity, "frames": place.frames,
                      "size": list(fmt.size), "fps": fmt.fps, "fit": fmt.fit, "preset": fmt.preset,
                      "crf": CRF, "crossfade": self.crossfade, "encoder": encoder_version()})
        if (meta := self.pieces.meta(key)) is not None:
            return self.pieces.path(key, ".mp4"), key, _detections(meta["detections"])
        with self.pieces.making(key, ".mp4") as tmp, self.pieces.making(key, ".jpg") as still, \
                self.encoders or nullcontext():
            detections = encode_video(found, tmp, frames=place.frames, fmt=fmt, thumb=still,
                                      crossfade=self.crossfade, on_progress=on_progress)
        self.pieces.finish(key, {"files": [".mp4", ".jpg"],
                                 "detections": _detections_json(detections)})
        return self.pieces.path(key, ".mp4"), key, detections

    def _picture_flags(self, found: media.Scan, detections: Detections | None, place: Place,
                       asked: float | None, available: int) -> list[Flag]:
        info = found.probe
        seconds = place.frames / self.fmt.fps
        flags = quality.duration(info.duration, asked, padded=place.frames > available)
        sar = float(found.sar) if found.sar else 1.0
        shape = info.width * sar / info.height if info.height else 1.0
        out_shape = self.fmt.size[0] / self.fmt.size[1]
        if detections is not None:
            flags += quality.picture(detections.black, detections.frozen, seconds)
            flags += quality.letterbox(detections.content, detections.analysed, shape,
                                       out_shape, self.fmt.fit)
        else:
            flags += quality.letterbox(None, (0, 0), shape, out_shape, self.fmt.fit)
        return flags

    def _thumb(self, video: Path, video_key: str, place: Place) -> Path:
        """The middle frame of the segment, for the contact sheet."""
        made = self.pieces.path(video_key, ".jpg")
        if made.exists():  # cut by the same ffmpeg that made the video piece
            return made
        key = digest({"v": PIECE_VERSION, "kind": "thumb", "video": video_key,
                      "frame": place.frames // 2, "width": THUMB_WIDTH})
        path = self.pieces.path(key, ".jpg")
        if not path.exists():  # written whole under a temporary name, so present is complete
            with self.pieces.making(key, ".jpg") as tmp:
                media.still(video, tmp, at=(place.frames // 2 + 0.5) / self.fmt.fps,
                            width=THUMB_WIDTH)
        return path

    def _level(self, heard: sound.Sound, identity: str, place: Place) -> sound.Level:
        key = digest({"v": PIECE_VERSION, "kind": "level", "clip": identity,
                      "frames": place.frames, "fps": self.fmt.fps})
        if (meta := self.pieces.meta(key)) is not None:
            return sound.Level(meta["integrated"], meta["true_peak"],
                               tuple((s, e) for s, e in meta["silences"]))
        level = sound.measure(heard, samples_at(place.frames, self.fmt.fps))
        self.pieces.finish(key, {"files": [], "integrated": level.integrated,
                                 "true_peak": level.true_peak, "silences": level.silences})
        return level

    def _source(self, found: media.Scan) -> sound.Source:
        return sound.Source(found.probe.path, found.audio_index, found.start)

    def _sound(self, heard: sound.Sound, identity: str, place: Place, gain: float,
               ceiling: float | None) -> Path:
        cut = sound.Cut(offset=place.offset, samples=place.samples, fade_in=place.fade_in,
                        fade_out=place.fade_out, gain=round(gain, 3), ceiling=ceiling)
        key = digest({"v": PIECE_VERSION, "kind": "sound", "clip": identity,
                      "offset": cut.offset, "samples": cut.samples, "fade_in": cut.fade_in,
                      "fade_out": cut.fade_out, "gain": cut.gain, "ceiling": cut.ceiling,
                      "bitrate": sound.AUDIO_BITRATE, "aac": sound.AAC_OPTIONS,
                      "encoder": sound.encoder_version()})
        if self.pieces.meta(key) is not None:
            return self.pieces.path(key, ".m4a")
        with self.pieces.making(key, ".m4a") as tmp:
            sound.encode_piece(heard, cut, tmp)
        self.pieces.finish(key, {"files": [".m4a"]})
        return self.pieces.path(key, ".m4a")

    # ----------------------------------------------------------------------- the output

    def _window(self, a: Prepared, b: Prepared) -> Path:
        place = self.places[a.index]
        first = place.frames - self.crossfade
        key = digest({"v": PIECE_VERSION, "kind": "window", "a": a.video_key, "b": b.video_key,
                      "from": first, "frames": self.crossfade})
        if self.pieces.meta(key) is not None:
            return self.pieces.path(key, ".mp4")
        with self.pieces.making(key, ".mp4") as tmp:
            encode_window(a.video, b.video, tmp, a_from=first, frames=self.crossfade, fmt=self.fmt)
        self.pieces.finish(key, {"files": [".mp4"]})
        return self.pieces.path(key, ".mp4")

    def runs(self, prepared: Sequence[Prepared]) -> list[Run]:
        """What the join copies, in order: each segment's shown frames and the windows between."""
        runs: list[Run] = []
        for k, segment in enumerate(prepared):
            first, end = self.places[k].shown
            runs.append(Run(segment.video, first, end, segment.stream))
            if self.crossfade and k + 1 < len(prepared):
                runs.append(Run(self._window(segment, prepared[k + 1]), 0, self.crossfade))
        return runs

    def join(self, prepared: Sequence[Prepared], out: Path) -> Joined:
        """Join every segment into ``out`` by copy, verify it, and place the flags."""
        if [p.index for p in prepared] != list(range(len(self.places))):
            raise MediaError("every segment must be prepared, in order, before the join")
        tmp = media.temp_beside(out)
        try:
            sounds = [p.sound for p in prepared if p.sound is not None] if self.fmt.audio else []
            join(self.runs(prepared), sounds, tmp, fps=self.fmt.fps)
            probe = media.verify(tmp, size=self.fmt.size, fps=self.fmt.fps, frames=self.frames,
                                 audio=self.fmt.audio)
            os.replace(tmp, out)
        except OSError as exc:
            raise MediaError(f"{out}: cannot write the output: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        flags: list[Flag] = []
        for segment, place in zip(prepared, self.places, strict=True):
            flags += quality.placed(segment.flags, place.index, place.start / self.fmt.fps,
                                    place.frames / self.fmt.fps)
        return Joined(probe=replace(probe, path=out), flags=tuple(flags),
                      copied=all(p.copied for p in prepared), segments=tuple(prepared))


def file_identity(path: Path) -> str:
    """A clip file's identity for piece keys: where it is, how big, when it last changed."""
    info = path.stat()
    return f"file:{path.resolve()}:{info.st_size}:{info.st_mtime_ns}"


def stitch_files(segments: Sequence[media.Segment], out: Path, fmt: Format, *, crossfade: int = 0,
                 loudness: float | None = None, true_peak: float = -1.5,
                 on_progress: Callable[[float], None] | None = None,
                 work: Path | None = None) -> Joined:
    """``shotline stitch``: prepare every clip (copying the ones that already match), join.

    Clips whose video already is the output's format (and share their codec parameters) are
    copied as they are; otherwise every clip is normalised. Only their sound is re-encoded.
    """
    if not segments:
        raise MediaError("nothing to stitch: no segments")
    frames = [s.frames for s in segments]
    root = work or Path(tempfile.mkdtemp(prefix=".shotline-pieces-", dir=out.parent))
    try:
        assembly = Assembly(frames, fmt, Pieces(root), crossfade=crossfade, loudness=loudness,
                            true_peak=true_peak)
        with ThreadPoolExecutor(WORKERS) as pool:
            scans = list(pool.map(media.scan, [s.path for s in segments]))
        copy = (assembly.crossfade == 0
                and all(matches(found, n, fmt) for found, n in zip(scans, frames, strict=True))
                and len({(found.extradata, found.video_tb) for found in scans}) == 1)
        try:
            joined = _stitch(assembly, segments, scans, out, copy, on_progress)
        except MediaError:
            if not copy:
                raise
            # Clips can look alike and still not decode as one stream (their reordering or
            # timing differs): normalised pieces always can.
            joined = _stitch(assembly, segments, scans, out, False, on_progress)
    finally:
        if work is None:
            shutil.rmtree(root, ignore_errors=True)
    if on_progress is not None:
        on_progress(1.0)
    return joined


def _stitch(assembly: Assembly, segments: Sequence[media.Segment], scans: Sequence[media.Scan],
            out: Path, copy: bool, on_progress: Callable[[float], None] | None) -> Joined:
    done = [0]

    def one(k: int) -> Prepared:
        path = segments[k].path
        prepared = assembly.prepare(k, path, file_identity(path), copy=copy, thumb=False,
                                    found=scans[k])
        done[0] += 1
        if on_progress is not None:
            on_progress(0.9 * done[0] / len(segments))
        return prepared

    with ThreadPoolExecutor(WORKERS) as pool:
        prepared = list(pool.map(one, range(len(segments))))
    return assembly.join(prepared, out)
