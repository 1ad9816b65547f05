"""Assembling one output: each clip prepared as it arrives, then every piece joined by copy.

:meth:`Assembly.prepare` turns one clip into its segment: its video (the clip's own, when it
already is the output's format, else a piece re-encoded to it by :mod:`.normalise`), its
piece of sound on the grid (:mod:`.seams`, :mod:`.sound`), a thumbnail for the contact sheet,
and its quality flags (:mod:`.quality`). A render calls it for each shot the moment that
shot's clip is stored, while the other shots still render; :meth:`Assembly.join` then only
copies packets (:mod:`.join`). Invariants:

* **Content-addressed.** Every piece is stored under a key of what it is made from: the
  clip's identity (its shot key in a render) and every setting that changes the bytes. A
  piece on disk is complete (it is written to a temporary name and renamed); its metadata
  JSON is written after it and is the mark that the piece is done. So a reopened render, a
  re-roll (only the new take's pieces are made) or a second stitch reuses them.
* **Memory does not grow with length.** A piece is made from one clip by one process; the
  join holds one input per stream at a time.
* **One stream.** Every run the join copies shares one set of codec parameters: copied clips
  share one :data:`Signature` and nothing is normalised beside them; otherwise the copied
  clips are normalised too, at the join (:meth:`Assembly.joinable`).
* **Verified before done.** The joined file is checked (:func:`.media.verify`) before it is
  moved to where it was asked for; a failure leaves nothing there.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
from .normalise import CRF, THUMB_WIDTH, Detections, Format, encode_video, encode_window, look
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
    signature: Signature | None = None  # a copied clip's: every copied run must share it


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


Signature = tuple[bytes, tuple[int, int], Fraction, int]
"""What clips copied into one output must share: codec parameters (SPS/PPS), size, time base,
and how far the first packet's decode time runs ahead of its presentation time."""


def matches(found: media.Scan, frames: int, fmt: Format) -> bool:
    """Whether a clip's own video can be copied into the output as it is, whole: H.264 in the
    output's size, pixel format and frame rate, unturned, exactly ``frames`` frames on a steady
    clock from 0, starting on a keyframe (so no copied frame refers to one left out), with its
    parameter sets out of band as MP4 keeps them (a transport stream's are in the packets)."""
    info = found.probe
    step = Fraction(1, fmt.fps) / found.video_tb
    pts = sorted(found.packet_pts)
    return (
        info.video_codec == "h264" and info.pix_fmt == "yuv420p" and bool(found.extradata)
        and (info.width, info.height) == fmt.size and found.sar in (None, 0, 1)
        and found.rotation == 0 and info.fps == fmt.fps and step.denominator == 1
        and found.first_packet_key and bool(pts) and pts[0] == 0 and frames == len(pts)
        and all(b - a == step for a, b in zip(pts, pts[1:], strict=False))
    )


def signature(found: media.Scan) -> Signature:
    """The clip's :data:`Signature`."""
    delay = found.packet_pts[0] - found.packet_dts[0] if found.packet_pts else 0
    return (found.extradata, (found.probe.width, found.probe.height), found.video_tb, delay)


class Assembly:
    """Makes the segments of one output and joins them."""

    def __init__(self, frames: Sequence[int], fmt: Format, pieces: Pieces, *,
                 crossfade: int = 0, loudness: float | None = None, true_peak: float = -1.5,
                 encoders: int | None = None, copy_matching: bool = False) -> None:
        fmt.check()
        # Clips already in the output's format keep their own video (no generation loss, and
        # the tail after the last clip is a decode for the checks, not an encode).
        self.copy_matching = copy_matching
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
                thumb: bool = True, check: bool = True,
                on_progress: Callable[[float], None] | None = None) -> Prepared:
        """Make (or find) segment ``index`` from ``clip``, whose identity is ``identity``.

        Blocks; the video piece (an ffmpeg process) is made while this thread makes the sound.
        With ``copy_matching``, a clip that :func:`matches` keeps its own video, and is only
        decoded once for the picture checks (not at all if ``check`` is off).
        """
        place = self.places[index]
        found = media.scan(clip)
        available = media.available_frames(found.probe, self.fmt.fps)
        if place.frames > available + 1:
            raise MediaError(
                f"{clip.name}: asked for {place.frames} frames at {self.fmt.fps} fps but the clip "
                f"has only {available} ({found.probe.duration:.3f} s)")
        copy = self.copy_matching and self.crossfade == 0 and \
            matches(found, place.frames, self.fmt)

        def picture() -> tuple[Path, str, int, Detections | None, Path | None]:
            """(video, its key, its stream, what the detectors saw, a thumbnail if made)."""
            if not copy:
                made, key, seen = self._video(found, identity, place, on_progress)
                return made, key, 0, seen, None
            if check:
                return clip, identity, found.video_index, *self._look(found, identity, place)
            return clip, identity, found.video_index, None, None

        with ThreadPoolExecutor(1) as side:
            pending = side.submit(picture)
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
                if self.loudness is not None:
                    over = level.passes(gain, self.true_peak)
                    if over is None:
                        peak = self._true_peak(heard, identity, place)
                        over = peak is not None and peak + gain > self.true_peak
                    ceiling = self.true_peak if over else None
                piece = self._sound(heard, identity, place, gain, ceiling)
            video, video_key, stream, detections, still = pending.result()
        flags = self._picture_flags(found, detections, place, asked, available) + sound_flags
        if thumb and still is None:
            still = self._thumb(video, video_key, place)
        return Prepared(index, video, video_key, stream, piece, still if thumb else None,
                        tuple(flags), loudness=level.integrated if level else None, gain=gain,
                        copied=copy, signature=signature(found) if copy else None)

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

    def _look(self, found: media.Scan, identity: str, place: Place) -> tuple[Detections, Path]:
        """The checks of a clip copied as it is, and its middle frame (found, or made now)."""
        key = digest({"v": PIECE_VERSION, "kind": "look", "clip": identity,
                      "frames": place.frames, "fps": self.fmt.fps, "width": THUMB_WIDTH})
        if (meta := self.pieces.meta(key)) is None:
            with self.pieces.making(key, ".jpg") as still, self.encoders or nullcontext():
                detections = look(found, frames=place.frames, fps=self.fmt.fps, thumb=still)
            self.pieces.finish(key, {"files": [".jpg"], "detections": _detections_json(detections)})
        else:
            detections = _detections(meta["detections"])
        return detections, self.pieces.path(key, ".jpg")

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
        key = digest({"v": PIECE_VERSION, "kind": "level", "clip": identity, "peak": "sample",
                      "frames": place.frames, "fps": self.fmt.fps})
        if (meta := self.pieces.meta(key)) is not None:
            return sound.Level(meta["integrated"], meta["peak"],
                               tuple((s, e) for s, e in meta["silences"]))
        level = sound.measure(heard, samples_at(place.frames, self.fmt.fps))
        self.pieces.finish(key, {"files": [], "integrated": level.integrated, "peak": level.peak,
                                 "silences": level.silences})
        return level

    def _true_peak(self, heard: sound.Sound, identity: str, place: Place) -> float | None:
        key = digest({"v": PIECE_VERSION, "kind": "true_peak", "clip": identity,
                      "frames": place.frames, "fps": self.fmt.fps})
        if (meta := self.pieces.meta(key)) is not None:
            return meta["true_peak"]  # type: ignore[no-any-return]
        peak = sound.true_peak(heard, samples_at(place.frames, self.fmt.fps))
        self.pieces.finish(key, {"files": [], "true_peak": peak})
        return peak

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
                      "levelled_in": "float32", "encoder": sound.encoder_version()})
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

    def runs(self, segments: Iterable[Prepared]) -> Iterator[Run]:
        """What the join copies, in order: each segment's shown frames and the windows between.

        Lazy: a run is made when the join reaches it, so segments may still be in the making.
        """
        before: Prepared | None = None
        for k, segment in enumerate(segments):
            if before is not None and self.crossfade:
                yield Run(self._window(before, segment), 0, self.crossfade)
            first, end = self.places[k].shown
            yield Run(segment.video, first, end, segment.stream)
            before = segment

    def normalised(self, segment: Prepared) -> Prepared:
        """``segment`` with a video piece made from its clip, if its clip was copied."""
        if not segment.copied:
            return segment
        found = media.scan(segment.video)
        video, key, _ = self._video(found, segment.video_key, self.places[segment.index], None)
        return replace(segment, video=video, video_key=key, stream=0, copied=False,
                       signature=None)

    def joinable(self, prepared: Sequence[Prepared]) -> list[Prepared]:
        """The segments, with copied clips normalised after all when they cannot share one
        stream: some shots were normalised, or the copied ones differ in codec parameters."""
        copied = {p.signature for p in prepared if p.copied}
        if not copied or (len(copied) == 1 and all(p.copied for p in prepared)):
            return list(prepared)
        return [self.normalised(p) for p in prepared]

    def join(self, prepared: Sequence[Prepared], out: Path) -> Joined:
        """Join every segment into ``out`` by copy, verify it, and place the flags."""
        if [p.index for p in prepared] != list(range(len(self.places))):
            raise MediaError("every segment must be prepared, in order, before the join")
        ready = self.joinable(prepared)
        return self._output(out, lambda tmp: self._join(ready.__getitem__, tmp), lambda: ready)

    def join_as_ready(self, pending: Sequence[Future[Prepared]], out: Path) -> Joined:
        """:meth:`join`, begun while the segments are still being made: the join copies each
        segment as soon as it and those before it are ready, so its work overlaps theirs.

        If a segment turns out not to join by copy to those before it (a copied clip beside
        a normalised one, or two copied clips' codec parameters differ), the join stops there,
        and once every segment is made the copied ones are normalised and all joined again.
        """
        if len(pending) != len(self.places):
            raise MediaError("every segment must be prepared, in order, before the join")
        return self._output(out, lambda tmp: self._join(lambda k: pending[k].result(), tmp),
                            lambda: [f.result() for f in pending])

    def _output(self, out: Path, first_try: Callable[[Path], media.Probe],
                segments: Callable[[], list[Prepared]]) -> Joined:
        tmp = media.temp_beside(out)
        try:
            try:
                probe = first_try(tmp)
                prepared = segments()
            except MediaError:
                prepared = segments()  # a segment that failed to be made fails the join here
                if not any(p.copied for p in prepared):
                    raise
                # Clips can look alike and still not decode as one stream (their timing
                # differs in a way the checks did not see): normalised pieces always can.
                prepared = [self.normalised(p) for p in prepared]
                probe = self._join(prepared.__getitem__, tmp)
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

    def _join(self, segment: Callable[[int], Prepared], tmp: Path) -> media.Probe:
        """Join segment(0), segment(1)... into ``tmp`` and verify it; each is asked for when the
        join reaches it (the picture first, then the sound, which lags it)."""
        count = len(self.places)
        sound = (piece for k in range(count) if (piece := segment(k).sound) is not None)
        join(self.runs(segment(k) for k in range(count)), sound if self.fmt.audio else (),
             tmp, fps=self.fmt.fps)
        return media.verify(tmp, size=self.fmt.size, fps=self.fmt.fps, frames=self.frames,
                            audio=self.fmt.audio)


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
    copied as they are, and their picture is not decoded at all (not checked: what makes
    their join a copy's speed); if any clip needs normalising, every clip is normalised.
    Only their sound is re-encoded. The join begins as soon as the first clips are ready.
    """
    if not segments:
        raise MediaError("nothing to stitch: no segments")
    frames = [s.frames for s in segments]
    root = work or Path(tempfile.mkdtemp(prefix=".shotline-pieces-", dir=out.parent))
    try:
        assembly = Assembly(frames, fmt, Pieces(root), crossfade=crossfade, loudness=loudness,
                            true_peak=true_peak, copy_matching=True)
        done = [0]

        def one(k: int) -> Prepared:
            path = segments[k].path
            prepared = assembly.prepare(k, path, file_identity(path), thumb=False, check=False)
            done[0] += 1
            if on_progress is not None:
                on_progress(0.9 * done[0] / len(segments))
            return prepared

        with ThreadPoolExecutor(WORKERS) as pool:
            pending = [pool.submit(one, k) for k in range(len(segments))]
            try:
                joined = assembly.join_as_ready(pending, out)
            finally:
                for future in pending:  # a failed join stops the clips not yet begun
                    future.cancel()
    finally:
        if work is None:
            shutil.rmtree(root, ignore_errors=True)
    if on_progress is not None:
        on_progress(1.0)
    return joined
