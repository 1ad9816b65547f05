"""Probe clips, join them into one MP4, verify the result, and cut stills from it.

Invariants every output of :func:`stitch` keeps (the work is done by :mod:`.assembly`):

* **Video is the master clock.** Each segment is cut to a whole number of output frames, and
  its sound keeps that picture's clock (:mod:`.seams`): audio/video drift is zero by
  construction, over any number of segments.
* **Frames-exact.** The output has exactly ``sum(frames) - (k - 1) * crossfade_frames`` frames
  at a constant frame rate, one codec profile (libx264 High yuv420p, closed GOPs) and AAC
  48 kHz stereo, with its index first (faststart).
* **Verified before done.** The join goes to a temporary file next to the destination, which
  :func:`verify` checks. Only a file that passes is moved into place, so a failure leaves no file.

Encoding uses the ffmpeg binary shipped in the ``imageio-ffmpeg`` wheel. Probing, joining,
verification and stills use PyAV in-process, since that wheel has no ffprobe. Every failure is
a :class:`~shotline.errors.MediaError`.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from PIL import Image, ImageOps

from .. import scratch
from ..errors import MediaError
from .seams import AAC_FRAME, AUDIO_RATE, min_frames

__all__ = [
    "Probe",
    "Scan",
    "Segment",
    "contact_sheet",
    "ffmpeg_exe",
    "fit_frames",
    "poster",
    "probe",
    "scan",
    "still",
    "stitch",
    "tile",
    "verify",
]

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
class Scan:
    """A probe plus the raw timing that :func:`verify` judges and the joiner relies on."""

    probe: Probe
    video_streams: int
    audio_streams: int
    video_index: int
    audio_index: int | None
    video_offset: float  # video start relative to the container start (ffmpeg's input zero)
    sar: Fraction | None
    video_tb: Fraction
    frame_pts: list[int] = field(default_factory=list)
    packet_pts: list[int] = field(default_factory=list)
    packet_dts: list[int] = field(default_factory=list)
    extradata: bytes = b""
    key_pts: list[int] = field(default_factory=list)  # the keyframes' pts
    first_packet_key: bool = False
    audio_tb: Fraction | None = None
    audio_packets: list[tuple[int, int]] = field(default_factory=list)
    video_span: tuple[int, int] = (2**62, -(2**62))  # earliest packet pts, latest packet end
    rotation: int = 0  # degrees the first frame is to be turned for display (its display matrix)

    @property
    def start(self) -> float:
        """Seconds: the presentation time of the first frame (the clip's frame 0)."""
        return float(self.frame_pts[0] * self.video_tb) if self.frame_pts else 0.0


def _undecodable(path: Path, why: object) -> MediaError:
    return MediaError(f"{path.name}: not a decodable video: {why}")


def probe(path: Path, *, count_frames: bool = True) -> Probe:
    """Describe ``path``; with ``count_frames`` every video frame is decoded and counted.

    Without it the packets are still read (cheap, and it catches truncation) but only the first
    frame is decoded, and ``frames`` is the packet count. A missing, empty, truncated or corrupt
    file, or one without a video stream, raises ``MediaError("<name>: not a decodable video: ...")``.
    """
    return scan(path, decode_all=count_frames).probe


def scan(path: Path, *, decode_all: bool = False, audio_timing: bool = False) -> Scan:
    """:func:`probe` plus every packet's timing (and the audio packets', with ``audio_timing``)."""
    if not path.is_file():
        raise _undecodable(path, "no such file")
    if path.stat().st_size == 0:
        raise _undecodable(path, "empty file")
    try:
        with _open(path) as container:
            found = _describe(path, container)
            _read_packets(container, found, decode_all=decode_all, audio_timing=audio_timing)
    except av.FFmpegError as exc:
        raise _undecodable(path, exc) from exc
    return _finish(path, found, decode_all)


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


def _describe(path: Path, container: InputContainer) -> Scan:
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
    return Scan(
        probe=info, video_streams=len(container.streams.video),
        audio_streams=len(container.streams.audio), video_index=video.index,
        audio_index=audio.index if audio else None, video_offset=max(0.0, start - container_start),
        sar=video.sample_aspect_ratio, video_tb=video_tb,
        audio_tb=audio.time_base if audio else None,
        extradata=bytes(video.codec_context.extradata or b""),
    )


def _read_packets(container: InputContainer, found: Scan, *, decode_all: bool, audio_timing: bool) -> None:
    video = container.streams[found.video_index]
    assert isinstance(video, VideoStream)
    if decode_all:  # frame threads pay off over many frames, not for the first alone
        video.thread_type = "AUTO"
    wanted: list[Stream] = [video]
    if audio_timing and found.audio_index is not None:
        wanted.append(container.streams[found.audio_index])
    for packet in container.demux(wanted):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        if packet.is_corrupt:
            raise _undecodable(found.probe.path, f"corrupt or truncated packet at byte {packet.pos}")
        if packet.stream_index == found.video_index:
            _take_video_packet(found, video, packet, decode=decode_all or not found.frame_pts)
        else:
            found.audio_packets.append((packet.pts or 0, packet.duration or 0))
    if decode_all or not found.frame_pts:
        _take_frames(found, video.decode(None))


def _take_video_packet(found: Scan, video: VideoStream, packet: Packet[Stream], *, decode: bool) -> None:
    if not found.packet_dts:
        found.first_packet_key = packet.is_keyframe
    found.packet_dts.append(packet.dts if packet.dts is not None else -(2**62))
    found.packet_pts.append(packet.pts if packet.pts is not None else -(2**62))
    if packet.is_keyframe and packet.pts is not None:
        found.key_pts.append(packet.pts)
    if packet.pts is not None:
        end = packet.pts + (packet.duration or 0)
        found.video_span = (min(found.video_span[0], packet.pts), max(found.video_span[1], end))
    if decode:
        _take_frames(found, video.decode(packet))


def _take_frames(found: Scan, frames: Iterable[VideoFrame]) -> None:
    for frame in frames:
        if not found.frame_pts:
            found.rotation = round(frame.rotation) % 360
        found.frame_pts.append(frame.pts if frame.pts is not None else -1)


def _finish(path: Path, found: Scan, decode_all: bool) -> Scan:
    packets = len(found.packet_dts)
    declared = found.probe.frames
    if declared and packets < declared:
        raise _undecodable(path, f"truncated: {packets} of {declared} video packets present")
    if not packets:
        raise _undecodable(path, "no video packets")
    counted = len(found.frame_pts) if decode_all else packets
    if not found.frame_pts or counted == 0:
        raise _undecodable(path, "no frame decodes")
    found.frame_pts.sort()
    duration = found.probe.duration
    if duration <= 0:  # the container keeps no stream duration (Matroska, say): use the packets
        duration = float(max(0, found.video_span[1] - found.video_span[0]) * found.video_tb)
    found.probe = replace(found.probe, frames=counted, duration=duration)
    return found


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Segment:
    """Take the first ``frames`` output frames (at the output fps) of the clip at ``path``."""

    path: Path
    frames: int


def available_frames(clip: Probe, fps: int) -> int:
    """Whole output frames the clip's video covers at ``fps``."""
    # Millisecond timestamps (Matroska, WebM) make 2 s at 24 fps read as 1.999 s; a sliver of a
    # frame is rounding, not a missing frame. The fps filter rounds to the nearest frame too.
    return math.floor(clip.duration * fps + _FRAME_ROUNDING)


def fit_frames(
    probes: Sequence[Probe], fps: int, target_seconds: float | None, crossfade_frames: int = 0,
    *, audio: bool = False,
) -> list[int]:
    """Frames to take from each clip so the stitched output is exactly the target length.

    Clips are taken in full, in order; any excess is cut from the end, shortening the last clips
    first. Without a target every clip is used in full, floored to whole output frames. With
    ``audio``, no segment of several is cut shorter than its sound needs (:func:`.seams.min_frames`).
    """
    if not probes:
        raise MediaError("no clips to fit")
    full = [available_frames(p, fps) for p in probes]
    floor = crossfade_frames + 1  # a segment must outlast the crossfade into it
    for clip, frames in zip(probes, full, strict=True):
        if frames < floor:
            raise MediaError(
                f"{clip.path.name}: {clip.duration:.3f} s is too short for a "
                f"{crossfade_frames}-frame crossfade at {fps} fps"
            )
    if audio and len(probes) > 1:
        floor = max(floor, min_frames(fps, crossfade_frames))
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
    shortest = sum(min(floor, n) for n in full) - joins
    if target < shortest:
        raise MediaError(
            f"{target / fps:.3f} s is too short to show all {len(full)} clips "
            f"(at least {shortest} frames at {fps} fps)"
        )
    frames = list(full)
    excess = have - target
    for i in reversed(range(len(frames))):
        cut = min(excess, max(0, frames[i] - floor))
        frames[i] -= cut
        excess -= cut
    return frames


# --------------------------------------------------------------------------- ffmpeg


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


def _tail(log: IO[bytes], lines: int = 20) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", "replace").strip().splitlines()
    return "\n".join(text[-lines:]) or "(no message)"


def _progress_times(stream: IO[str]) -> Iterator[float]:
    for line in stream:
        key, _, value = line.strip().partition("=")
        if key == "out_time_us" and value.lstrip("-").isdigit():
            yield int(value) / 1_000_000


def run_ffmpeg(argv: list[str], seconds: float,
               on_progress: Callable[[float], None] | None = None, *, cwd: Path | None = None) -> None:
    """Run ffmpeg (``argv`` asks for ``-progress pipe:1``); MediaError with its last words."""
    with tempfile.TemporaryFile() as log:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=log, text=True, cwd=cwd)
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
        # 1.0 is kept for "verified and in place", which only the caller can say.
        fraction = min(0.99, max(0.0, at / seconds)) if seconds > 0 else 0.0
        if on_progress is not None and fraction > done:
            done = fraction
            on_progress(fraction)


def temp_beside(out: Path) -> Path:
    """A temporary path next to ``out``: the final os.replace is an atomic rename, never a
    cross-device copy, and the name is this process's (scratch.py), so a later process
    removes it if this one is killed."""
    try:
        return scratch.beside(out, ".mp4")
    except OSError as exc:
        raise MediaError(f"{out}: cannot write the output: {exc}") from exc


# --------------------------------------------------------------------------- stitching


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
    loudness: float | None = None,
    true_peak: float = -1.5,
    on_progress: Callable[[float], None] | None = None,
    work: Path | None = None,
) -> Probe:
    """Normalise ``segments`` (or take them as they are, when they already match), join them
    by stream copy into ``out``, and return the verified output's probe.

    The output has ``sum(frames) - (len(segments) - 1) * crossfade_frames`` frames. With
    ``loudness`` (LUFS), every segment's sound is brought to it under ``true_peak`` (dBTP).
    Pieces are kept in ``work`` (a temporary directory if None, removed afterwards). Nothing is
    written to ``out`` unless the join passes :func:`verify`.
    """
    from .assembly import stitch_files  # these modules import this one
    from .normalise import Format

    fmt = Format(size=size, fps=fps, audio=audio, fit=fit, preset=preset)
    return stitch_files(segments, out, fmt, crossfade=crossfade_frames, loudness=loudness,
                        true_peak=true_peak, on_progress=on_progress, work=work).probe


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


def _check_video(scan: Scan, size: tuple[int, int], fps: int, frames: int) -> list[str]:
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


def _check_frame_timing(scan: Scan, fps: int) -> list[str]:
    problems: list[str] = []
    if scan.probe.fps != fps:
        problems.append(f"frame rate: average {scan.probe.fps}, want {fps}")
    # In MP4 every H.264 packet is one frame, so packet times are frame times without decoding.
    pts = sorted(scan.packet_pts)
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


def _check_audio(scan: Scan, fps: int, audio: bool) -> list[str]:
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


def _check_audio_timing(scan: Scan, fps: int) -> list[str]:
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
    # Sound that ends more than one AAC frame away from the picture has drifted from it.
    if abs(end - video) > AAC_FRAME / AUDIO_RATE + _EPS:
        problems.append(
            f"audio/video drift: audio ends at {end:.4f} s, video at {video:.4f} s "
            f"({abs(end - video) * 1000:.1f} ms apart; at most one AAC frame, "
            f"{AAC_FRAME / AUDIO_RATE * 1000:.1f} ms, is allowed)")
    return problems


def verify(path: Path, *, size: tuple[int, int], fps: int, frames: int, audio: bool,
           decode: bool = False) -> Probe:
    """Check ``path`` is the output :func:`stitch` promises; raise one MediaError listing every fault.

    Checks the streams, the frame count and timing (constant frame rate, keyframe first), the
    sound's continuity and its drift from the picture, and faststart, from the packets alone.
    With ``decode`` every frame is also decoded and counted.
    """
    found = scan(path, decode_all=decode, audio_timing=True)
    problems = check_scan(found, size=size, fps=fps, frames=frames, audio=audio)
    if problems:
        raise MediaError(f"{path.name} failed verification: " + "; ".join(problems))
    return found.probe


def check_scan(found: Scan, *, size: tuple[int, int], fps: int, frames: int, audio: bool,
               ) -> list[str]:
    """What :func:`verify` finds wrong with a file already scanned (with ``audio_timing``)."""
    problems = _check_video(found, size, fps, frames)
    problems += _check_audio(found, fps, audio)
    return problems + _check_faststart(found.probe.path)


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


def frame_png(video: Path, at: float, size: tuple[int, int] | None = None
              ) -> tuple[bytes, int, int]:
    """The frame of ``video`` shown at ``at`` seconds as PNG bytes (lossless, so a clip that
    starts from it starts from exactly that picture), with its width and height.

    With ``size``, a frame of another size is scaled to cover it (centred, cropped): the
    size the next call asks for, which vendors check an input image against.
    """
    image = _frames_at(video, [max(0.0, at)])[0]
    if size is not None and image.size != size:
        image = ImageOps.fit(image, size, method=Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), image.width, image.height


def poster(video: Path, out: Path, *, at: float | None = None) -> Path:
    """Write one frame of ``video`` (by default a third of the way in) as JPEG, or PNG for .png."""
    when = probe(video, count_frames=False).duration / 3 if at is None else at
    return _save(_frames_at(video, [when])[0], out)


def still(video: Path, out: Path, *, at: float, width: int | None = None) -> Path:
    """Write the frame of ``video`` at ``at`` seconds as an image, ``width`` pixels wide if given."""
    image = _frames_at(video, [at])[0]
    if width is not None and width != image.width:
        image = image.resize((width, max(1, round(width * image.height / image.width))),
                             Image.Resampling.LANCZOS)
    return _save(image, out)


def contact_sheet(
    video: Path, out: Path, *, times: Sequence[float], columns: int = 4, thumb_width: int = 320
) -> Path:
    """Tile one frame per time, left to right and top to bottom, ``columns`` to a row."""
    if not times:
        raise MediaError("contact sheet: no times given")
    if columns < 1 or thumb_width < 2:
        raise MediaError("contact sheet: columns and thumb_width must be positive")
    return _tile(_frames_at(video, times), out, columns, thumb_width)


def tile(images: Sequence[Path], out: Path, *, columns: int = 4, thumb_width: int = 320) -> Path:
    """A contact sheet from stills already cut (one per shot, say)."""
    if not images:
        raise MediaError("contact sheet: no images given")
    frames = []
    for path in images:
        try:
            with Image.open(path) as image:
                frames.append(image.convert("RGB"))
        except OSError as exc:
            raise MediaError(f"{path}: cannot read the still: {exc}") from exc
    return _tile(frames, out, columns, thumb_width)


def _tile(frames: list[Image.Image], out: Path, columns: int, thumb_width: int) -> Path:
    width, height = frames[0].size
    thumb = (thumb_width, max(1, round(thumb_width * height / width)))
    cols = min(columns, len(frames))
    rows = math.ceil(len(frames) / cols)
    sheet = Image.new("RGB", (cols * thumb[0], rows * thumb[1]), "black")
    for i, frame in enumerate(frames):
        at = ((i % cols) * thumb[0], (i // cols) * thumb[1])
        sheet.paste(frame.resize(thumb, Image.Resampling.LANCZOS), at)
    return _save(sheet, out)
