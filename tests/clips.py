"""Synthetic clips for media tests, made with the ffmpeg binary from the imageio-ffmpeg wheel.

Every clip shows a scrolling ``testsrc2`` (so no two consecutive frames are alike). A clip with a
marker also has a white box over the centre of the picture and a loud 1 kHz beep, both starting
at exactly ``marker_at`` seconds and lasting ``MARKER_SECONDS``: a sync reference that survives
scaling, frame-rate conversion and resampling. Outside the beep the audio is a quiet 220 Hz tone,
so that "has audio" is never just silence.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from shotline.engine.media import ffmpeg_exe

MARKER_SECONDS = 0.2
BEEP_LEVEL = 0.8
HUM_LEVEL = 0.05


Picture = Literal["moving", "black", "still"]


def _video_source(
    seconds: float, size: tuple[int, int], fps: int, marker_at: float | None, sar: str | None,
    picture: Picture = "moving", bars: int = 0,
) -> str:
    width, height = size
    inner = height - 2 * bars
    if picture == "black":
        chain = f"color=black:size={width}x{inner}:rate={fps}:duration={seconds}"
    elif picture == "still":  # one frame of the test card, held: a frozen picture
        chain = (f"testsrc2=size={width}x{inner}:rate={fps}:duration={seconds},"
                 "trim=end_frame=1,tpad=stop_mode=clone:stop=-1,"
                 f"trim=duration={seconds}")
    else:
        # scroll moves every pixel each frame, so a repeated frame stands out even when letterboxed.
        chain = f"testsrc2=size={width}x{inner}:rate={fps}:duration={seconds},scroll=h=0.0123"
    if bars:
        chain += f",pad={width}:{height}:0:{bars}:color=black"
    if marker_at is not None:
        # Frame times are floating point; 0.1 ms of margin keeps the frame at marker_at lit.
        on = f"gte(t,{marker_at - 1e-4})*lt(t,{marker_at + MARKER_SECONDS - 1e-4})"
        chain += f",drawbox=x=iw/4:y=ih/4:w=iw/2:h=ih/2:color=white:t=fill:enable='{on}'"
    if sar is not None:
        chain += f",setsar={sar}"
    return chain


def _audio_source(seconds: float, rate: int, channels: int, marker_at: float | None,
                  hum: float = HUM_LEVEL) -> str:
    expr = f"{hum}*sin(2*PI*220*t)"
    if marker_at is not None:
        on = f"gte(t,{marker_at})*lt(t,{marker_at + MARKER_SECONDS})"
        expr += f"+{BEEP_LEVEL}*sin(2*PI*1000*t)*{on}"
    layout = "mono" if channels == 1 else "stereo"
    exprs = "|".join([expr] * channels)
    return f"aevalsrc=exprs='{exprs}':s={rate}:c={layout}:d={seconds}"


def make_clip(
    path: Path,
    *,
    seconds: float,
    size: tuple[int, int] = (640, 360),
    fps: int = 24,
    codec: Literal["h264", "hevc"] = "h264",
    pix_fmt: Literal["yuv420p", "yuv444p"] = "yuv420p",
    audio: tuple[int, int] | None = None,
    audio_seconds: float | None = None,
    marker_at: float | None = None,
    faststart: bool = True,
    audio_delay: float = 0.0,
    timescale: int | None = None,
    sar: str | None = None,
    picture: Picture = "moving",
    bars: int = 0,
    hum: float = HUM_LEVEL,
) -> Path:
    """Write a short synthetic MP4 to ``path``; ``audio`` is ``(sample_rate, channels)``.

    ``audio_delay`` starts the audio track that much later than the video (earlier if negative,
    by starting the video late instead); the beep still sounds with the flash. ``timescale`` sets
    the video track's time base (vendors use 90 kHz, among others). ``sar`` (say ``"4/3"``) makes
    the pixels non-square, as in anamorphic sources. ``picture`` makes it black or one frame
    held (frozen), ``bars`` adds black rows at top and bottom, and ``hum`` sets the level of
    the tone under the beep (0 for digital silence).
    """
    argv = [ffmpeg_exe(), "-v", "error", "-y"]
    if audio_delay < 0:
        argv += ["-itsoffset", str(-audio_delay)]
    argv += ["-f", "lavfi", "-i", _video_source(seconds, size, fps, marker_at, sar, picture, bars)]
    if audio is not None:
        rate, channels = audio
        length = seconds if audio_seconds is None else audio_seconds
        beep_at = None if marker_at is None else marker_at - audio_delay
        if audio_delay > 0:
            argv += ["-itsoffset", str(audio_delay)]
        argv += ["-f", "lavfi", "-i", _audio_source(length, rate, channels, beep_at, hum)]
    if codec == "hevc":
        argv += ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
                 "-tag:v", "hvc1"]
    else:
        argv += ["-c:v", "libx264", "-preset", "ultrafast"]
    argv += ["-pix_fmt", pix_fmt]
    if audio is not None:
        argv += ["-c:a", "aac", "-b:a", "96k"]
    if timescale is not None:
        argv += ["-video_track_timescale", str(timescale)]
    if faststart:
        argv += ["-movflags", "+faststart"]
    argv.append(str(path))
    subprocess.run(argv, check=True, capture_output=True)
    return path


def make_vfr_clip(path: Path, *, seconds: float, size: tuple[int, int] = (320, 180)) -> Path:
    """A clip at a nominal 24 fps whose frame times wobble: every third frame is 10 ms late."""
    width, height = size
    argv = [ffmpeg_exe(), "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=24:duration={seconds}",
            "-vf", "settb=1/24000,setpts='(N/24+0.01*eq(mod(N,3),2))/TB'", "-fps_mode", "passthrough",
            "-enc_time_base", "1/24000",
            "-c:v", "libx264", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]
    subprocess.run(argv, check=True, capture_output=True)
    return path
