"""Video pieces: one clip re-encoded into the output's exact format, checked as it goes.

A piece can be joined to any other piece of the same :class:`Format` by stream copy,
because every piece is made by the same command: the same size, frame rate, pixel format
and x264 settings give byte-identical codec parameters (SPS/PPS). Invariants:

* A piece holds exactly the ``frames`` output frames asked for, at a constant frame rate,
  starting on a keyframe. x264's GOPs are closed, and with a crossfade of ``d`` frames a
  keyframe is forced at ``d`` and at ``frames - d`` too, so the frames inside a crossfade can
  be left out of the copy and a window (:func:`encode_window`) put in their place.
* The same decode that feeds the encoder also feeds the quality detectors (black, frozen,
  letterbox bars), on the frames that will be shown: detection costs no second decode.
* The piece is written to a temporary name and checked (:func:`check`) before the caller
  moves it into place.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import MediaError
from .media import Scan, check_scan, ffmpeg_exe, run_ffmpeg, scan

CRF = 20
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow")
DETECT_WIDTH = 320  # detectors look at a small copy of each frame: bars and stillness survive
THUMB_WIDTH = 320  # the contact sheet's stills


@dataclass(frozen=True)
class Format:
    """What every piece of one output shares."""

    size: tuple[int, int]
    fps: int
    audio: bool
    fit: Literal["letterbox", "crop"] = "letterbox"
    preset: str = "veryfast"

    def check(self) -> None:
        width, height = self.size
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise MediaError(f"output size {width}x{height}: both sides must be even and at least 2")
        if self.fps < 1:
            raise MediaError(f"output fps {self.fps}: must be at least 1")
        if self.fit not in ("letterbox", "crop"):
            raise MediaError(f"fit {self.fit!r}: use letterbox or crop")
        if self.preset not in PRESETS:
            raise MediaError(f"preset {self.preset!r}: use one of {', '.join(PRESETS)}")


@dataclass(frozen=True)
class Detections:
    """What the detectors saw in the frames a piece shows (seconds from its frame 0)."""

    black: tuple[tuple[float, float], ...]
    frozen: tuple[tuple[float, float], ...]
    content: tuple[int, int] | None  # the non-black box (w, h) over all frames, of ``analysed``
    analysed: tuple[int, int]


def keyframes(frames: int, crossfade: int) -> tuple[int, ...]:
    """The frames of a piece that must be keyframes."""
    if crossfade <= 0:
        return (0,)
    return tuple(sorted({0, crossfade, frames - crossfade}))


def fit_filter(size: tuple[int, int], fit: Literal["letterbox", "crop"]) -> str:
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


def _encoder(fmt: Format, keys: tuple[int, ...]) -> list[str]:
    argv = [
        "-map_metadata", "-1", "-map_chapters", "-1",
        # The graph already gives one frame per tick; passthrough keeps ffmpeg from papering
        # over a timing fault with duplicated or dropped frames, so the check would see it.
        "-fps_mode", "passthrough",
        "-c:v", "libx264", "-preset", fmt.preset, "-crf", str(CRF), "-pix_fmt", "yuv420p",
        "-profile:v", "high", "-g", str(2 * fmt.fps),
    ]
    if len(keys) > 1:
        argv += ["-force_key_frames", "expr:" + "+".join(f"eq(n,{k})" for k in keys)]
    return argv + ["-movflags", "+faststart", "-f", "mp4"]


def _head() -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
            "-progress", "pipe:1", "-stats_period", "0.25"]


def encode_video(clip: Scan, out: Path, *, frames: int, fmt: Format, crossfade: int = 0,
                 thumb: Path | None = None,
                 on_progress: Callable[[float], None] | None = None) -> Detections:
    """Encode the first ``frames`` output frames of ``clip`` to ``out``; what the detectors saw.

    A clip at most one frame short has its last frame held for the missing one. With
    ``thumb``, the middle frame is also written there as a JPEG, THUMB_WIDTH wide.
    """
    available = clip.probe.duration * fmt.fps
    pad = ",tpad=stop_mode=clone:stop=1" if frames > available + 0.05 else ""
    graph = (
        f"[0:{clip.video_index}]setpts=PTS-STARTPTS,fps={fmt.fps},split[main][look];"
        f"[main]{fit_filter(fmt.size, fmt.fit)},setsar=1,format=yuv420p{pad},"
        f"trim=end_frame={frames},setpts=PTS-STARTPTS" + (",split[v][still];" if thumb else "[v];")
        + f"[look]{_detectors(frames)}[d]"
    )
    if thumb:  # from the frames already decoded and fitted: a still costs no second decode
        graph += f";[still]{_middle(frames)}[t]"
    keys = keyframes(frames, crossfade)
    # file: keeps a clip named like "concat:..." or "-x.mp4" from meaning anything else.
    argv = [*_head(), "-i", f"file:{clip.probe.path.resolve()}", "-filter_complex", graph,
            "-map", "[v]", *_encoder(fmt, keys), f"file:{out.resolve()}",
            "-map", "[d]", "-f", "null", "-", *(_still_to(thumb) if thumb else [])]
    log = _detect(argv, frames / fmt.fps, on_progress)
    check(out, frames=frames, fmt=fmt, keys=keys)
    return parse_detections(log, frames / fmt.fps, _analysed(clip))


def look(clip: Scan, *, frames: int, fps: int, thumb: Path) -> Detections:
    """What the detectors see in the first ``frames`` frames of a clip whose video is copied
    as it is (it already has the output's size and ``fps``); its middle frame to ``thumb``.

    Only decodes: the cost of a piece's checks without its encode. The loop filter is skipped
    (a quarter less work); the detectors look at a small copy, where deblocking changes nothing.
    """
    graph = f"[0:{clip.video_index}]{_detectors(frames)},split[d][s];[s]{_middle(frames)}[t]"
    argv = [*_head(), "-skip_loop_filter", "all", "-i", f"file:{clip.probe.path.resolve()}",
            "-filter_complex", graph, "-map", "[d]", "-f", "null", "-", *_still_to(thumb)]
    return parse_detections(_detect(argv, frames / fps, None), frames / fps, _analysed(clip))


def _detect(argv: list[str], seconds: float,
            on_progress: Callable[[float], None] | None) -> str:
    """Run ``argv`` (a graph holding :func:`_detectors`); the detectors' log."""
    with tempfile.TemporaryDirectory(prefix="shotline-look-") as work:
        # The log is written relative to the working directory: a path inside the filter
        # graph would need the graph's own escaping.
        run_ffmpeg(argv, seconds, on_progress, cwd=Path(work))
        return (Path(work) / "look.txt").read_text("utf-8", "replace")


def _middle(frames: int) -> str:
    """The middle one of ``frames`` frames, THUMB_WIDTH wide."""
    return f"select=eq(n\\,{frames // 2}),scale={THUMB_WIDTH}:-2"


def _still_to(thumb: Path) -> list[str]:
    """Output options writing the graph's ``[t]`` to ``thumb`` as one JPEG."""
    return ["-map", "[t]", "-frames:v", "1", "-q:v", "3", "-update", "1",
            "-f", "image2", f"file:{thumb.resolve()}"]


def _detectors(frames: int) -> str:
    """The detectors' chain: black, frozen and the non-black box, printed to look.txt."""
    return (f"trim=end_frame={frames},scale={DETECT_WIDTH}:-2,format=yuv420p,"
            "blackdetect=d=0.1:pix_th=0.10,freezedetect=n=-60dB:d=0.5,"
            "cropdetect=limit=0.1:round=2:skip=0:reset=0,metadata=mode=print:file=look.txt")


def _analysed(clip: Scan) -> tuple[int, int]:
    """The size of the small copy the detectors looked at."""
    width, height = clip.probe.width, clip.probe.height
    return DETECT_WIDTH, max(2, round(height * DETECT_WIDTH / width / 2) * 2)


def encode_window(a: Path, b: Path, out: Path, *, a_from: int, frames: int, fmt: Format) -> None:
    """The crossfade from piece ``a`` (its frames from ``a_from``) into piece ``b`` (its first)."""
    seconds = frames / fmt.fps
    graph = (
        f"[0:v]fps={fmt.fps},trim=end_frame={frames},setpts=PTS-STARTPTS[x];"
        f"[1:v]fps={fmt.fps},trim=end_frame={frames},setpts=PTS-STARTPTS[y];"
        f"[x][y]xfade=transition=fade:duration={seconds:.6f}:offset=0,"
        f"trim=end_frame={frames},format=yuv420p[v]"
    )
    # Seek half a frame early: a seek to the frame's own time could land just after it.
    argv = [*_head(), "-ss", f"{(a_from - 0.5) / fmt.fps:.6f}", "-i", f"file:{a.resolve()}",
            "-i", f"file:{b.resolve()}", "-filter_complex", graph, "-map", "[v]",
            *_encoder(fmt, (0,)), f"file:{out.resolve()}"]
    run_ffmpeg(argv, seconds, None)
    check(out, frames=frames, fmt=fmt, keys=(0,))


def check(path: Path, *, frames: int, fmt: Format, keys: tuple[int, ...]) -> Scan:
    """A piece is the output format, exactly ``frames`` long, with keyframes at ``keys``."""
    found = scan(path, audio_timing=True)
    if problems := check_scan(found, size=fmt.size, fps=fmt.fps, frames=frames, audio=False):
        raise MediaError(f"{path.name} is not a good piece: " + "; ".join(problems))
    step = (1 / fmt.fps) / found.video_tb
    have = {round(p / step) for p in found.key_pts}
    if missing := [k for k in keys if k not in have]:
        raise MediaError(f"{path.name}: no keyframe at frame {missing[0]}; the copy join needs one")
    return found


def _pairs(starts: list[float], ends: list[float], until: float) -> tuple[tuple[float, float], ...]:
    ends = ends + [until] * (len(starts) - len(ends))  # still going when the clip ended
    return tuple((s, e) for s, e in zip(starts, ends, strict=False))


def parse_detections(log: str, seconds: float, analysed: tuple[int, int]) -> Detections:
    """Read the metadata the detectors attached to each frame (``metadata=mode=print``)."""
    black_starts: list[float] = []
    black_ends: list[float] = []
    freeze_starts: list[float] = []
    freeze_ends: list[float] = []
    box: dict[str, int] = {}
    for line in log.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep:
            continue
        if key == "lavfi.black_start":
            black_starts.append(float(value))
        elif key == "lavfi.black_end":
            black_ends.append(float(value))
        elif key == "lavfi.freezedetect.freeze_start":
            freeze_starts.append(float(value))
        elif key == "lavfi.freezedetect.freeze_end":
            freeze_ends.append(float(value))
        elif key.startswith("lavfi.cropdetect."):
            box[key.rpartition(".")[2]] = int(float(value))
    # cropdetect never resets here, so its last box covers every frame's non-black part; a clip
    # black throughout has none (and is flagged as black instead).
    content = (box["w"], box["h"]) if box.get("w", 0) > 0 and box.get("h", 0) > 0 else None
    return Detections(black=_pairs(black_starts, black_ends, seconds),
                      frozen=_pairs(freeze_starts, freeze_ends, seconds),
                      content=content, analysed=analysed)
