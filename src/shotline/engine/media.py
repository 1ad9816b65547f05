"""Probe clips, stitch them into one MP4, verify the result, and cut stills from it.

Invariants every output of :func:`stitch` keeps:

* **Video is the master clock.** Each segment is cut to a whole number of output frames, and
  its audio is resampled, remixed and then padded with silence or cut to exactly that length.
  A clip without audio gets silence of that length.
* **Frames-exact.** The output has exactly ``sum(frames) - (k - 1) * crossfade_frames`` frames
  at a constant frame rate. Everything is normalised, joined and trimmed in one ffmpeg filter
  graph and encoded once (libx264 yuv420p + AAC 48 kHz stereo, faststart).
* **Verified before done.** The encode goes to a temporary file next to the destination, which
  :func:`verify` checks. Only a file that passes is moved into place, so a failure leaves no file.

Encoding uses the ffmpeg binary shipped in the ``imageio-ffmpeg`` wheel. Probing, verification
and stills use PyAV in-process, since that wheel has no ffprobe. Every failure is a
:class:`~shotline.errors.MediaError`.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import IO, Literal

import av
import imageio_ffmpeg
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from .. import scratch
from ..errors import MediaError

__all__ = [
    "Probe",
    "Segment",
    "contact_sheet",
    "fit_frames",
    "poster",
    "probe",
    "stitch",
    "verify",
]

AUDIO_RATE = 48_000
AAC_FRAME = 1024  # samples per AAC frame: the granularity of the audio track's end
CRF = 20
AUDIO_BITRATE = "192k"
_EPS = 1e-6  # float noise in durations read from containers
_FRAME_ROUNDING = 0.05  # of a frame: container timestamp rounding, see _available_frames


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class Probe:
    """What a media file holds; ``duration`` and ``frames`` describe its video stream."""

    path: Path
    duration: float
    width: int
    height: int
    fps: Fraction
    frames: int
    video_codec: str
    pix_fmt: str
    has_audio: bool
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    audio_duration: float | None


@dataclass
class _Scan:
    """A probe plus the raw timing that :func:`verify` judges."""

    probe: Probe
    video_streams: int
    audio_streams: int
    video_index: int
    audio_index: int | None
    video_offset: float  # video start relative to the container start (ffmpeg's input zero)
    sar: Fraction | None
    video_tb: Fraction
    frame_pts: list[int] = field(default_factory=list)
    packet_dts: list[int] = field(default_factory=list)
    first_packet_key: bool = False
    audio_tb: Fraction | None = None
    audio_packets: list[tuple[int, int]] = field(default_factory=list)
    video_span: tuple[int, int] = (2**62, -(2**62))  # earliest packet pts, latest packet end


def _undecodable(path: Path, why: object) -> MediaError:
    return MediaError(f"{path.name}: not a decodable video: {why}")


def probe(path: Path, *, count_frames: bool = True) -> Probe:
    """Describe ``path``; with ``count_frames`` every video frame is decoded and counted.

    Without it the packets are still read (cheap, and it catches truncation) but only the first
    frame is decoded, and ``frames`` is the packet count. A missing, empty, truncated or corrupt
    file, or one without a video stream, raises ``MediaError("<name>: not a decodable video: ...")``.
    """
    return _scan(path, decode_all=count_frames, audio_timing=False).probe


def _scan(path: Path, *, decode_all: bool, audio_timing: bool) -> _Scan:
    if not path.is_file():
        raise _undecodable(path, "no such file")
    if path.stat().st_size == 0:
        raise _undecodable(path, "empty file")
    try:
        with _open(path) as container:
            scan = _describe(path, container)
            _read_packets(container, scan, decode_all=decode_all, audio_timing=audio_timing)
    except av.FFmpegError as exc:
        raise _undecodable(path, exc) from exc
    return _finish(path, scan, decode_all)


def _open(path: Path) -> InputContainer:
    # Vendors write all sorts of bytes into metadata; a bad title must not fail the clip.
    return av.open(str(path), mode="r", metadata_errors="replace")


def _seconds(ticks: int | None, time_base: Fraction | None) -> float | None:
    if ticks is None or time_base is None:
        return None
    return float(ticks * time_base)


def _video_stream(path: Path, container: InputContainer) -> VideoStream:
    # Cover art is a video stream too; it is never the clip.
    moving = [s for s in container.streams.video if not s.disposition & s.disposition.attached_pic]
    if not moving:
        raise _undecodable(path, "no video stream")
    return moving[0]


def _frame_rate(path: Path, video: VideoStream) -> Fraction:
    for rate in (video.average_rate, video.guessed_rate, video.base_rate):
        if rate:
            return Fraction(rate)
    raise _undecodable(path, "the video stream has no frame rate")


def _describe(path: Path, container: InputContainer) -> _Scan:
    video = _video_stream(path, container)
    audio: AudioStream | None = container.streams.audio[0] if container.streams.audio else None
    video_tb = video.time_base or Fraction(1, 90_000)
    start = _seconds(video.start_time, video_tb) or 0.0
    container_start = (container.start_time or 0) / av.time_base
    info = Probe(
        path=path, duration=_seconds(video.duration, video_tb) or 0.0, width=video.width,
        height=video.height, fps=_frame_rate(path, video), frames=video.frames,
        video_codec=video.codec_context.name, pix_fmt=video.pix_fmt or "", has_audio=audio is not None,
        audio_codec=audio.codec_context.name if audio else None,
        audio_rate=audio.sample_rate if audio else None,
        audio_channels=audio.channels if audio else None,
        audio_duration=_seconds(audio.duration, audio.time_base) if audio else None,
    )
    return _Scan(
        probe=info, video_streams=len(container.streams.video),
        audio_streams=len(container.streams.audio), video_index=video.index,
        audio_index=audio.index if audio else None, video_offset=max(0.0, start - container_start),
        sar=video.sample_aspect_ratio, video_tb=video_tb,
        audio_tb=audio.time_base if audio else None,
    )


def _read_packets(container: InputContainer, scan: _Scan, *, decode_all: bool, audio_timing: bool) -> None:
    video = container.streams[scan.video_index]
    assert isinstance(video, VideoStream)
    video.thread_type = "AUTO"
    wanted: list[Stream] = [video]
    if audio_timing and scan.audio_index is not None:
        wanted.append(container.streams[scan.audio_index])
    for packet in container.demux(wanted):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        if packet.is_corrupt:
            raise _undecodable(scan.probe.path, f"corrupt or truncated packet at byte {packet.pos}")
        if packet.stream_index == scan.video_index:
            _take_video_packet(scan, video, packet, decode=decode_all or not scan.frame_pts)
        else:
            scan.audio_packets.append((packet.pts or 0, packet.duration or 0))
    if decode_all or not scan.frame_pts:
        scan.frame_pts.extend(_pts(f) for f in video.decode(None))


def _take_video_packet(scan: _Scan, video: VideoStream, packet: Packet[Stream], *, decode: bool) -> None:
    if not scan.packet_dts:
        scan.first_packet_key = packet.is_keyframe
    scan.packet_dts.append(packet.dts if packet.dts is not None else -(2**62))
    if packet.pts is not None:
        end = packet.pts + (packet.duration or 0)
        scan.video_span = (min(scan.video_span[0], packet.pts), max(scan.video_span[1], end))
    if decode:
        scan.frame_pts.extend(_pts(f) for f in video.decode(packet))


def _pts(frame: VideoFrame) -> int:
    return frame.pts if frame.pts is not None else -1


def _finish(path: Path, scan: _Scan, decode_all: bool) -> _Scan:
    packets = len(scan.packet_dts)
    declared = scan.probe.frames
    if declared and packets < declared:
        raise _undecodable(path, f"truncated: {packets} of {declared} video packets present")
    if not packets:
        raise _undecodable(path, "no video packets")
    counted = len(scan.frame_pts) if decode_all else packets
    if not scan.frame_pts or counted == 0:
        raise _undecodable(path, "no frame decodes")
    scan.frame_pts.sort()
    duration = scan.probe.duration
    if duration <= 0:  # the container keeps no stream duration (Matroska, say): use the packets
        duration = float(max(0, scan.video_span[1] - scan.video_span[0]) * scan.video_tb)
    scan.probe = replace(scan.probe, frames=counted, duration=duration)
    return scan


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Segment:
    """Take the first ``frames`` output frames (at the output fps) of the clip at ``path``."""

    path: Path
    frames: int


def _available_frames(clip: Probe, fps: int) -> int:
    """Whole output frames the clip's video covers at ``fps``."""
    # Millisecond timestamps (Matroska, WebM) make 2 s at 24 fps read as 1.999 s; a sliver of a
    # frame is rounding, not a missing frame. The fps filter rounds to the nearest frame too.
    return math.floor(clip.duration * fps + _FRAME_ROUNDING)


def fit_frames(
    probes: Sequence[Probe], fps: int, target_seconds: float | None, crossfade_frames: int = 0
) -> list[int]:
    """Frames to take from each clip so the stitched output is exactly the target length.

    Clips are taken in full, in order; any excess is cut from the end, shortening the last clips
    first. Without a target every clip is used in full, floored to whole output frames.
    """
    if not probes:
        raise MediaError("no clips to fit")
    full = [_available_frames(p, fps) for p in probes]
    floor = crossfade_frames + 1  # a segment must outlast the crossfade into it
    for clip, frames in zip(probes, full, strict=True):
        if frames < floor:
            raise MediaError(
                f"{clip.path.name}: {clip.duration:.3f} s is too short for a "
                f"{crossfade_frames}-frame crossfade at {fps} fps"
            )
    if target_seconds is None:
        return full
    return _cut_to(full, round(target_seconds * fps), fps, floor, crossfade_frames)


def _cut_to(full: list[int], target: int, fps: int, floor: int, crossfade: int) -> list[int]:
    joins = (len(full) - 1) * crossfade
    have = sum(full) - joins
    if target > have:
        raise MediaError(
            f"clips are too short: they give {have / fps:.3f} s ({have} frames at {fps} fps) "
            f"but {target / fps:.3f} s ({target} frames) was asked for"
        )
    shortest = floor * len(full) - joins
    if target < shortest:
        raise MediaError(
            f"{target / fps:.3f} s is too short to show all {len(full)} clips "
            f"(at least {shortest} frames at {fps} fps)"
        )
    frames = list(full)
    excess = have - target
    for i in reversed(range(len(frames))):
        cut = min(excess, frames[i] - floor)
        frames[i] -= cut
        excess -= cut
    return frames


@dataclass(frozen=True)
class _Input:
    """One segment as the filter graph needs it."""

    scan: _Scan
    frames: int
    pad_one: bool  # the clip is at most one frame short: clone its last frame for that frame


def _plan(segments: Sequence[Segment], size: tuple[int, int], fps: int, crossfade: int) -> list[_Input]:
    if not segments:
        raise MediaError("nothing to stitch: no segments")
    width, height = size
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise MediaError(f"output size {width}x{height}: both sides must be even and at least 2")
    if fps < 1:
        raise MediaError(f"output fps {fps}: must be at least 1")
    if crossfade < 0:
        raise MediaError(f"crossfade_frames {crossfade}: must not be negative")
    return [_plan_one(s, fps, crossfade if len(segments) > 1 else 0) for s in segments]


def _plan_one(segment: Segment, fps: int, crossfade: int) -> _Input:
    name = segment.path.name
    if segment.frames < 1:
        raise MediaError(f"{name}: asked for {segment.frames} frames; at least 1 is needed")
    if crossfade >= segment.frames:
        raise MediaError(
            f"{name}: a {crossfade}-frame crossfade needs a segment longer than its "
            f"{segment.frames} frames"
        )
    scan = _scan(segment.path, decode_all=False, audio_timing=False)
    available = _available_frames(scan.probe, fps)
    if segment.frames > available + 1:
        raise MediaError(
            f"{name}: asked for {segment.frames} frames at {fps} fps but the clip has only "
            f"{available} ({scan.probe.duration:.3f} s)"
        )
    return _Input(scan, segment.frames, pad_one=segment.frames > available)


# --------------------------------------------------------------------------- filter graph


def _samples(frames: int, fps: int) -> int:
    return round(frames * AUDIO_RATE / fps)


def _seconds_arg(frames: int, fps: int) -> str:
    return f"{frames / fps:.6f}"


def _fit_filter(size: tuple[int, int], fit: Literal["letterbox", "crop"]) -> str:
    # Expressions on `dar` honour non-square source pixels and see the frame after ffmpeg's
    # autorotation, so portrait phone clips fit the same way as portrait renders.
    w, h = size
    if fit == "crop":
        sw = f"if(gt(dar\\,{w}/{h})\\,ceil({h}*dar/2)*2\\,{w})"
        sh = f"if(gt(dar\\,{w}/{h})\\,{h}\\,ceil({w}/dar/2)*2)"
        return f"scale=w={sw}:h={sh}:out_range=tv,crop={w}:{h}"
    sw = f"if(gt(dar\\,{w}/{h})\\,{w}\\,trunc({h}*dar/2)*2)"
    sh = f"if(gt(dar\\,{w}/{h})\\,trunc({w}/dar/2)*2\\,{h})"
    return f"scale=w={sw}:h={sh}:out_range=tv,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black"


def _video_chain(i: int, item: _Input, fps: int, fit: str) -> str:
    # fps before scaling, so frames that will be dropped are never scaled.
    pad = ",tpad=stop_mode=clone:stop=1" if item.pad_one else ""
    return (
        f"[{i}:{item.scan.video_index}]setpts=PTS-STARTPTS,fps={fps},{fit},setsar=1,"
        f"format=yuv420p{pad},trim=end_frame={item.frames},setpts=PTS-STARTPTS[v{i}]"
    )


_STEREO = f"aformat=sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"


def _audio_chain(i: int, item: _Input, fps: int) -> str:
    samples = _samples(item.frames, fps)
    if item.scan.audio_index is None:
        return f"anullsrc=r={AUDIO_RATE}:cl=stereo,{_STEREO},atrim=end_sample={samples}[a{i}]"
    # Shift by the video's start so audio keeps its place against frame 0; async + first_pts
    # then fill a late start with silence (or drop an early one) before the fixed-length cut.
    return (
        f"[{i}:{item.scan.audio_index}]asetpts=PTS-{item.scan.video_offset:.6f}/TB,"
        f"aresample={AUDIO_RATE}:async=1:first_pts=0,{_STEREO},"
        f"apad,atrim=end_sample={samples},asetpts=PTS-STARTPTS[a{i}]"
    )


def _concat(count: int, audio: bool) -> str:
    labels = "".join(f"[v{i}]" + (f"[a{i}]" if audio else "") for i in range(count))
    outs = "[vj][aj]" if audio else "[vj]"
    return f"{labels}concat=n={count}:v=1:a={int(audio)}{outs}"


def _crossfades(items: Sequence[_Input], fps: int, crossfade: int, audio: bool) -> list[str]:
    # Offsets are counted on the joined stream so far: everything before segment k, less the
    # k overlaps already made. Written in whole frames, so they land exactly on frame times.
    chains: list[str] = []
    length = items[0].frames
    video, sound = "[v0]", "[a0]"
    for k in range(1, len(items)):
        last = k == len(items) - 1
        v_out, a_out = ("[vj]", "[aj]") if last else (f"[vx{k}]", f"[ax{k}]")
        offset = _seconds_arg(length - crossfade, fps)
        chains.append(
            f"{video}[v{k}]xfade=transition=fade:duration={_seconds_arg(crossfade, fps)}"
            f":offset={offset}{v_out}"
        )
        if audio:
            ns = _samples(crossfade, fps)
            chains.append(f"{sound}[a{k}]acrossfade=ns={ns}:c1=tri:c2=tri{a_out}")
        length += items[k].frames - crossfade
        video, sound = v_out, a_out
    return chains


def _output_frames(frames: Sequence[int], crossfade: int) -> int:
    return sum(frames) - (len(frames) - 1) * crossfade


def _filter_graph(
    items: Sequence[_Input], fps: int, size: tuple[int, int], fit: Literal["letterbox", "crop"],
    audio: bool, crossfade: int,
) -> str:
    fitting = _fit_filter(size, fit)
    chains = [_video_chain(i, item, fps, fitting) for i, item in enumerate(items)]
    if audio:
        chains += [_audio_chain(i, item, fps) for i, item in enumerate(items)]
    if len(items) == 1:
        chains.append("[v0]null[vj]" + (";[a0]anull[aj]" if audio else ""))
    elif crossfade:
        chains += _crossfades(items, fps, crossfade, audio)
    else:
        chains.append(_concat(len(items), audio))
    chains.append("[vj]null[vout]")
    if audio:
        # Some builds return acrossfade output a little short; the final length is fixed here.
        total = _samples(_output_frames([i.frames for i in items], crossfade), fps)
        chains.append(f"[aj]apad,atrim=end_sample={total}[aout]")
    return ";".join(chains)


# --------------------------------------------------------------------------- encoding


def ffmpeg_exe() -> str:
    """The ffmpeg inside the imageio-ffmpeg wheel (or the one IMAGEIO_FFMPEG_EXE names)."""
    # get_ffmpeg_exe() quietly falls back to whatever "ffmpeg" is on PATH; a system build differs
    # by machine (Debian's 5.1 xfade duplicates a frame), so only the wheel's own binary is taken.
    try:
        exe = Path(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:
        raise MediaError(f"no ffmpeg binary in the imageio-ffmpeg wheel: {exc}") from exc
    bundled = Path(imageio_ffmpeg.__file__).resolve().parent
    if not os.environ.get("IMAGEIO_FFMPEG_EXE") and not exe.resolve().is_relative_to(bundled):
        raise MediaError(f"imageio-ffmpeg offered {exe}, not its own binary; reinstall the wheel")
    return str(exe)


def _ffmpeg_argv(
    items: Sequence[_Input], graph: str, target: Path, *, fps: int, audio: bool, preset: str
) -> list[str]:
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
            "-progress", "pipe:1", "-stats_period", "0.25"]
    for item in items:
        # file: keeps a clip named like "concat:..." or "-x.mp4" from meaning anything else.
        argv += ["-i", f"file:{item.scan.probe.path.resolve()}"]
    argv += ["-filter_complex", graph, "-map", "[vout]"]
    if audio:
        argv += ["-map", "[aout]"]
    argv += [
        "-map_metadata", "-1", "-map_chapters", "-1",
        # The graph already gives one frame per tick; passthrough keeps ffmpeg from papering
        # over a timing fault with duplicated or dropped frames, so verify() would see it.
        "-fps_mode", "passthrough",
        "-c:v", "libx264", "-preset", preset, "-crf", str(CRF), "-pix_fmt", "yuv420p",
        "-profile:v", "high", "-g", str(2 * fps),
    ]
    if audio:
        argv += ["-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE), "-ac", "2"]
    argv += ["-movflags", "+faststart", "-f", "mp4", f"file:{target.resolve()}"]
    return argv


def _tail(log: IO[bytes], lines: int = 12) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", "replace").strip().splitlines()
    return "\n".join(text[-lines:]) or "(no message)"


def _progress_times(stream: IO[str]) -> Iterator[float]:
    for line in stream:
        key, _, value = line.strip().partition("=")
        if key == "out_time_us" and value.lstrip("-").isdigit():
            yield int(value) / 1_000_000


def _run_ffmpeg(argv: list[str], seconds: float, on_progress: Callable[[float], None] | None) -> None:
    with tempfile.TemporaryFile() as log:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=log, text=True)
        except OSError as exc:
            raise MediaError(f"cannot run ffmpeg ({argv[0]}): {exc}") from exc
        with proc:
            assert proc.stdout is not None
            try:
                _feed_progress(proc.stdout, seconds, on_progress)
            except BaseException:
                proc.kill()  # a raising callback or an interrupt must not leave ffmpeg running
                raise
        if proc.returncode != 0:
            raise MediaError(f"ffmpeg failed (exit {proc.returncode}):\n{_tail(log)}")


def _feed_progress(stream: IO[str], seconds: float, on_progress: Callable[[float], None] | None) -> None:
    done = 0.0
    for at in _progress_times(stream):
        # 1.0 is kept for "verified and in place", which only stitch() can say.
        fraction = min(0.99, max(0.0, at / seconds))
        if on_progress is not None and fraction > done:
            done = fraction
            on_progress(fraction)


def _temp_beside(out: Path) -> Path:
    # Same directory, so the final os.replace is an atomic rename, never a cross-device copy;
    # named for this process, so a later one can remove it if this one is killed.
    try:
        return scratch.beside(out, ".mp4")
    except OSError as exc:
        raise MediaError(f"{out}: cannot write the output: {exc}") from exc


def stitch(
    segments: Sequence[Segment],
    out: Path,
    *,
    size: tuple[int, int],
    fps: int,
    audio: bool,
    fit: Literal["letterbox", "crop"] = "letterbox",
    crossfade_frames: int = 0,
    preset: str = "veryfast",
    on_progress: Callable[[float], None] | None = None,
) -> Probe:
    """Normalise, join and encode ``segments`` into ``out``; return the verified output's probe.

    The output has ``sum(frames) - (len(segments) - 1) * crossfade_frames`` frames. Nothing is
    written to ``out`` unless the encode passes :func:`verify`.
    """
    if fit not in ("letterbox", "crop"):
        raise MediaError(f"fit {fit!r}: use letterbox or crop")
    items = _plan(segments, size, fps, crossfade_frames)
    crossfade = crossfade_frames if len(items) > 1 else 0
    total = _output_frames([i.frames for i in items], crossfade)
    graph = _filter_graph(items, fps, size, fit, audio, crossfade)
    tmp = _temp_beside(out)
    try:
        argv = _ffmpeg_argv(items, graph, tmp, fps=fps, audio=audio, preset=preset)
        _run_ffmpeg(argv, total / fps, on_progress)
        result = verify(tmp, size=size, fps=fps, frames=total, audio=audio)
        os.replace(tmp, out)
    except OSError as exc:
        raise MediaError(f"{out}: cannot write the output: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    if on_progress is not None:
        on_progress(1.0)
    return replace(result, path=out)


# --------------------------------------------------------------------------- verification


def _top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order."""
    kinds: list[str] = []
    size = path.stat().st_size
    with path.open("rb") as fh:
        at = 0
        while at + 8 <= size:
            fh.seek(at)
            header = fh.read(16)
            length = int.from_bytes(header[:4], "big")
            kinds.append(header[4:8].decode("latin-1"))
            if length == 1:  # a 64-bit size follows the type
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                break
            if length < 8:
                kinds.append("<bad box size>")
                break
            at += length
    return kinds


def _check_faststart(path: Path) -> list[str]:
    kinds = _top_level_boxes(path)
    if "moov" not in kinds:
        return ["faststart: no moov box"]
    if "mdat" in kinds and kinds.index("mdat") < kinds.index("moov"):
        return [f"faststart: moov comes after mdat (boxes {' '.join(kinds)})"]
    return []


def _check_video(scan: _Scan, size: tuple[int, int], fps: int, frames: int) -> list[str]:
    info, problems = scan.probe, []
    if scan.video_streams != 1:
        problems.append(f"video streams: {scan.video_streams}, want 1")
    if info.video_codec != "h264":
        problems.append(f"video codec: {info.video_codec}, want h264")
    if info.pix_fmt != "yuv420p":
        problems.append(f"pix_fmt: {info.pix_fmt}, want yuv420p")
    if (info.width, info.height) != size:
        problems.append(f"size: {info.width}x{info.height}, want {size[0]}x{size[1]}")
    if scan.sar not in (None, 0, 1):
        problems.append(f"sample aspect ratio: {scan.sar}, want 1:1")
    if info.frames != frames:
        problems.append(f"frame count: {info.frames}, want {frames}")
    if abs(info.duration - frames / fps) > 1 / fps + _EPS:
        problems.append(f"duration: {info.duration:.4f} s, want {frames / fps:.4f} s within a frame")
    return problems + _check_frame_timing(scan, fps)


def _check_frame_timing(scan: _Scan, fps: int) -> list[str]:
    problems: list[str] = []
    if scan.probe.fps != fps:
        problems.append(f"frame rate: average {scan.probe.fps}, want {fps}")
    pts = scan.frame_pts
    if pts and pts[0] != 0:
        problems.append(f"start: first frame at pts {pts[0]}, want 0")
    step = Fraction(1, fps) / scan.video_tb
    # A tick that does not divide a frame evenly allows one tick of rounding per frame.
    slack = 0 if step.denominator == 1 else 1
    odd = [i for i in range(1, len(pts)) if abs((pts[i] - pts[i - 1]) - step) > slack]
    if odd:
        gap = float((pts[odd[0]] - pts[odd[0] - 1]) * scan.video_tb) * 1000
        problems.append(
            f"frame timing: frame {odd[0]} is {gap:.2f} ms after the one before, want "
            f"{1000 / fps:.2f} ms ({len(odd)} irregular steps: not constant frame rate)"
        )
    dts = scan.packet_dts
    if any(b <= a for a, b in zip(dts, dts[1:], strict=False)):
        problems.append("frame timing: packet DTS not strictly increasing")
    if not scan.first_packet_key:
        problems.append("frame timing: first video packet is not a keyframe")
    return problems


def _check_audio(scan: _Scan, fps: int, audio: bool) -> list[str]:
    info = scan.probe
    if not audio:
        return [f"audio streams: {scan.audio_streams}, want none"] if scan.audio_streams else []
    if scan.audio_streams != 1:
        return [f"audio streams: {scan.audio_streams}, want 1"]
    problems = []
    if info.audio_codec != "aac":
        problems.append(f"audio codec: {info.audio_codec}, want aac")
    if info.audio_rate != AUDIO_RATE:
        problems.append(f"audio rate: {info.audio_rate} Hz, want {AUDIO_RATE}")
    if info.audio_channels != 2:
        problems.append(f"audio channels: {info.audio_channels}, want 2")
    return problems + _check_audio_timing(scan, fps)


def _check_audio_timing(scan: _Scan, fps: int) -> list[str]:
    packets, tb = scan.audio_packets, scan.audio_tb
    if not packets or tb is None:
        return ["audio length: no audio packets"]
    problems = []
    for (pts, duration), (nxt, _) in zip(packets, packets[1:], strict=False):
        if nxt != pts + duration:
            problems.append(f"audio gaps: packet at {float(pts * tb):.4f} s is followed by one at "
                            f"{float(nxt * tb):.4f} s, want {float((pts + duration) * tb):.4f} s")
            break
    end = float((packets[-1][0] + packets[-1][1]) * tb)
    video = scan.probe.duration
    # AAC ends on a whole 1024-sample frame, so the track may run up to one frame past the video.
    if abs(end - video) > AAC_FRAME / AUDIO_RATE + 1 / fps:
        problems.append(f"audio length: audio ends at {end:.4f} s, video at {video:.4f} s")
    return problems


def verify(path: Path, *, size: tuple[int, int], fps: int, frames: int, audio: bool) -> Probe:
    """Check ``path`` is the output :func:`stitch` promises; raise one MediaError listing every fault."""
    scan = _scan(path, decode_all=True, audio_timing=True)
    problems = _check_video(scan, size, fps, frames)
    problems += _check_audio(scan, fps, audio)
    problems += _check_faststart(path)
    if problems:
        raise MediaError(f"{path.name} failed verification: " + "; ".join(problems))
    return scan.probe


# --------------------------------------------------------------------------- stills


def _frames_at(video: Path, times: Sequence[float]) -> list[Image.Image]:
    """One picture per requested time: the last frame that starts at or before it."""
    try:
        with _open(video) as container:
            stream = _video_stream(video, container)
            tb = stream.time_base or Fraction(1, 90_000)
            return [_frame_at(video, container, stream, tb, t) for t in times]
    except av.FFmpegError as exc:
        raise _undecodable(video, exc) from exc


def _frame_at(
    video: Path, container: InputContainer, stream: VideoStream, tb: Fraction, at: float
) -> Image.Image:
    container.seek(max(0, int(at / tb)), stream=stream, backward=True)
    chosen: VideoFrame | None = None
    for frame in container.decode(stream):
        if chosen is not None and frame.pts is not None and frame.pts * tb > at + _EPS:
            break
        chosen = frame
    if chosen is None:
        raise MediaError(f"{video.name}: no frame at {at:.3f} s")
    return _to_image(chosen, stream.sample_aspect_ratio)


def _to_image(frame: VideoFrame, sar: Fraction | None) -> Image.Image:
    # Non-square source pixels are stretched to their display shape, as a player would.
    width = round(frame.width * sar) if sar and sar != 1 else frame.width
    plane = frame.reformat(width=width, format="rgb24").planes[0]
    # Rows may be padded past width * 3 bytes; the raw decoder's stride argument skips that.
    return Image.frombytes("RGB", (plane.width, plane.height), bytes(plane), "raw", "RGB", plane.line_size, 1)


def _save(image: Image.Image, out: Path) -> Path:
    kind = "PNG" if out.suffix.lower() == ".png" else "JPEG"
    tmp = out.with_name(scratch.name(out.name, out.suffix))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp, format=kind, **({"quality": 90} if kind == "JPEG" else {}))
        os.replace(tmp, out)
    except OSError as exc:
        raise MediaError(f"{out}: cannot write the image: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return out


def poster(video: Path, out: Path, *, at: float | None = None) -> Path:
    """Write one frame of ``video`` (by default a third of the way in) as JPEG, or PNG for .png."""
    when = probe(video, count_frames=False).duration / 3 if at is None else at
    return _save(_frames_at(video, [when])[0], out)


def contact_sheet(
    video: Path, out: Path, *, times: Sequence[float], columns: int = 4, thumb_width: int = 320
) -> Path:
    """Tile one frame per time, left to right and top to bottom, ``columns`` to a row."""
    if not times:
        raise MediaError("contact sheet: no times given")
    if columns < 1 or thumb_width < 2:
        raise MediaError("contact sheet: columns and thumb_width must be positive")
    frames = _frames_at(video, times)
    width, height = frames[0].size
    thumb = (thumb_width, max(1, round(thumb_width * height / width)))
    cols = min(columns, len(frames))
    rows = math.ceil(len(frames) / cols)
    sheet = Image.new("RGB", (cols * thumb[0], rows * thumb[1]), "black")
    for i, frame in enumerate(frames):
        at = ((i % cols) * thumb[0], (i // cols) * thumb[1])
        sheet.paste(frame.resize(thumb, Image.Resampling.LANCZOS), at)
    return _save(sheet, out)
