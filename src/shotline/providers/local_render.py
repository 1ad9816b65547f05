"""The local provider's animatic: one shot drawn as a moving title card, encoded by ffmpeg.

Text is drawn with Pillow's bundled scalable font (no system font, no drawtext), and the
video is made by the ffmpeg binary shipped in the ``imageio-ffmpeg`` wheel:

* a still canvas, a little wider than the frame, holds the card (shot number, model, take
  and the prompt, wrapped and cut with "..." when it does not fit); a crop window slides
  over it, so the card drifts;
* a strip along the bottom (a clock, a frame counter and a progress bar) is drawn per frame
  and piped raw to ffmpeg, so no two consecutive frames are alike;
* the background colour and the tone's pitch come from a hash of (prompt, seed, take), so
  consecutive shots cut visibly and the same request draws the same picture;
* the encode is bit-exact (``+bitexact`` flags, no metadata, fixed encoder threads), so the
  same :class:`Look` gives the same bytes on the same machine and ffmpeg build.

Pure apart from :func:`render`, which writes one file.
"""

from __future__ import annotations

import colorsys
import contextlib
import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from PIL import Image, ImageDraw, ImageFont

from ..engine.media import ffmpeg_exe
from ..errors import MediaError

MAX_TEXT = 600  # characters of the prompt that are laid out at all
Codec = Literal["h264", "hevc"]
PixFmt = Literal["yuv420p", "yuv444p"]
RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

ENCODERS: dict[str, list[str]] = {
    "h264": ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-threads:v", "2"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-crf", "30", "-tag:v", "hvc1",
             "-x265-params", "log-level=error:pools=2:frame-threads=1"],
}


@dataclass(frozen=True)
class Look:
    """Everything that decides the output file's bytes."""

    prompt: str
    number: int  # the shot's 1-based number, as shown on the card
    model: str
    seed: int | None
    take: int
    seconds: int
    width: int
    height: int
    fps: int
    audio: bool
    codec: Codec = "h264"
    pix_fmt: PixFmt = "yuv420p"
    audio_rate: int = 48000
    channels: int = 2
    audio_ratio: float = 1.0  # audio length as a fraction of the video's

    @property
    def frames(self) -> int:
        return self.seconds * self.fps


def seed_bytes(prompt: str, seed: int | None, take: int) -> bytes:
    """The hash every random-looking choice of a shot is taken from."""
    return hashlib.sha256(f"{seed}\x00{take}\x00{prompt}".encode()).digest()


def background(prompt: str, seed: int | None, take: int) -> RGB:
    """A mid-dark, saturated colour: white text stays readable on every one of them."""
    h = seed_bytes(prompt, seed, take)
    r, g, b = colorsys.hsv_to_rgb(h[0] / 256, 0.45 + h[1] / 255 * 0.4, 0.30 + h[2] / 255 * 0.25)
    return round(r * 255), round(g * 255), round(b * 255)


def tone(prompt: str, seed: int | None, take: int) -> int:
    """The tone bed's pitch in Hz, 160..479."""
    h = seed_bytes(prompt, seed, take)
    return 160 + int.from_bytes(h[3:5], "big") % 320


def _font(size: int) -> Font:
    # Not cached: renders run in worker threads, and a FreeType face is not thread-safe.
    return ImageFont.load_default(size=size)


def _fit(line: str, font: Font, width: int, more: bool = False) -> str:
    """``line`` cut to ``width`` pixels; '...' marks a cut (or, with ``more``, hidden lines)."""
    if not more and font.getlength(line) <= width:
        return line
    while line and font.getlength(line + "...") > width:
        line = line[:-1]
    return line.rstrip() + "..."


def wrap(text: str, font: Font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap into at most ``max_lines`` lines of at most ``width`` pixels."""
    lines: list[str] = []
    for word in text[:MAX_TEXT].split():
        trial = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(trial) <= width:
            lines[-1] = trial
        elif len(lines) == max_lines:
            return [*(_fit(x, font, width) for x in lines[:-1]), _fit(lines[-1], font, width, True)]
        else:
            lines.append(word)
    return [_fit(x, font, width, more=len(text) > MAX_TEXT and i == len(lines) - 1)
            for i, x in enumerate(lines)]


def canvas(look: Look) -> Image.Image:
    """The still picture, ``drift`` pixels wider than the frame: a crop window slides over it."""
    colour = background(look.prompt, look.seed, look.take)
    image = Image.new("RGB", (look.width + drift(look), look.height), colour)
    w, h = round(look.width * 0.75), round(look.height * 0.62)
    x0, y0 = round(look.width * 0.05) + drift(look), round(look.height * 0.08)
    pad = max(4, round(h * 0.07))
    panel: RGB = (min(255, colour[0] + 40), min(255, colour[1] + 40), min(255, colour[2] + 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle((x0, y0, x0 + w - 1, y0 + h - 1), fill=panel, outline=(255, 255, 255),
                   width=max(1, h // 100))
    title = _font(max(8, round(look.height * 0.075)))
    body = _font(max(7, round(look.height * 0.055)))
    draw.text((x0 + pad, y0 + pad), f"SHOT {look.number}", font=title, fill=(255, 255, 255))
    label = _fit(f"{look.model}  take {look.take}", body, w // 2)
    draw.text((x0 + w - pad - body.getlength(label), y0 + pad), label, font=body,
              fill=(230, 230, 230))
    line_h = round(look.height * 0.055 * 1.25)
    top = y0 + pad + round(look.height * 0.075 * 1.6)
    lines = wrap(look.prompt, body, w - 2 * pad, max(1, (y0 + h - top - pad) // max(1, line_h)))
    for n, line in enumerate(lines):
        draw.text((x0 + pad, top + n * line_h), line, font=body, fill=(255, 255, 255))
    return image


def drift(look: Look) -> int:
    """How far the card travels over the shot: up to a pixel a frame, at most 15% of the width."""
    return max(2, min(look.frames - 1, round(look.width * 0.15)))


def strip_height(look: Look) -> int:
    return max(8, round(look.height * 0.16)) // 2 * 2


class Strip:
    """The bottom band, redrawn every frame: a clock and a progress bar."""

    def __init__(self, look: Look) -> None:
        self.look = look
        colour = background(look.prompt, look.seed, look.take)
        self.base = Image.new("RGB", (look.width, strip_height(look)), colour)
        self.font = _font(max(7, round(look.height * 0.05)))

    def frame(self, i: int) -> bytes:
        look, image = self.look, self.base.copy()
        w, h = image.size
        draw = ImageDraw.Draw(image)
        bar_h = max(2, round(h * 0.16))
        bar_y = h - bar_h - max(1, round(h * 0.2))
        clock = f"t={i / look.fps:.2f}s / {look.seconds}s   frame {i + 1}/{look.frames}"
        draw.text((round(w * 0.06), max(0, bar_y - round(look.height * 0.07))), clock,
                  font=self.font, fill=(255, 255, 255))
        draw.rectangle((0, bar_y, w - 1, bar_y + bar_h - 1), fill=(0, 0, 0))
        filled = round(w * (i + 1) / look.frames)
        draw.rectangle((0, bar_y, filled - 1, bar_y + bar_h - 1), fill=(255, 255, 255))
        return image.tobytes()


def _graph(look: Look) -> str:
    """Slide a frame-sized window over the still canvas and lay the strip over its bottom.

    Both pictures are converted to YUV before they move (the canvas once, the strip per
    frame), so no full-size colour conversion happens per frame.
    """
    last = max(1, look.frames - 1)
    yuv = ("scale=out_color_matrix=bt709:out_range=tv:flags=bitexact+accurate_rnd,"
           f"format={look.pix_fmt}")
    blend = "yuv444" if look.pix_fmt == "yuv444p" else "yuv420"
    return (f"[1:v]{yuv},loop=loop={look.frames - 1}:size=1:start=0,settb=1/{look.fps},setpts=N,"
            f"crop=w={look.width}:h={look.height}:x='floor({drift(look)}*n/{last})':y=0[bg];"
            f"[0:v]{yuv},settb=1/{look.fps},setpts=N[band];"
            f"[bg][band]overlay=x=0:y={look.height - strip_height(look)}:format={blend}:"
            "eof_action=endall[v]")


def ffmpeg_argv(look: Look, still: Path, dest: Path) -> list[str]:
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{look.width}x{strip_height(look)}",
            "-framerate", str(look.fps), "-i", "pipe:0", "-framerate", str(look.fps), "-i", str(still)]
    maps = ["-map", "[v]"]
    if look.audio:
        hz = tone(look.prompt, look.seed, look.take)
        expr = f"0.10*sin(2*PI*{hz}*t)+0.05*sin(2*PI*{hz * 3 / 2}*t)"
        layout = "mono" if look.channels == 1 else "stereo"
        argv += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{'|'.join([expr] * look.channels)}'"
                 f":s={look.audio_rate}:c={layout}:d={look.seconds * look.audio_ratio}"]
        maps += ["-map", "2:a", "-c:a", "aac", "-b:a", "96k", "-ar", str(look.audio_rate),
                 "-ac", str(look.channels), "-flags:a", "+bitexact"]
    return [*argv, "-filter_complex", _graph(look), "-filter_complex_threads", "1", *maps,
            *ENCODERS[look.codec], "-pix_fmt", look.pix_fmt, "-frames:v", str(look.frames),
            "-fps_mode", "passthrough",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
            "-movflags", "+faststart", "-f", "mp4", str(dest)]


def render(look: Look, dest: Path) -> None:
    """Encode ``look`` into ``dest`` (an MP4). Blocking; raises MediaError if ffmpeg fails.

    On any failure ``dest`` is removed: a half-written file is never left behind.
    """
    try:
        with tempfile.TemporaryDirectory(prefix=".render-", dir=dest.parent) as tmp:
            still = Path(tmp) / "canvas.png"
            canvas(look).save(still, format="PNG", compress_level=1)
            with (Path(tmp) / "ffmpeg.log").open("w+b") as log:
                _encode(look, still, dest, log)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _encode(look: Look, still: Path, dest: Path, log: IO[bytes]) -> None:
    strip = Strip(look)
    with subprocess.Popen(ffmpeg_argv(look, still, dest), stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=log) as proc:
        assert proc.stdin is not None
        try:
            for i in range(look.frames):
                proc.stdin.write(strip.frame(i))
            proc.stdin.close()
        except BrokenPipeError:  # ffmpeg died; its log says why
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()  # closes the pipe even though the flush fails
        except BaseException:
            proc.kill()
            raise
        if proc.wait() != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise MediaError(f"ffmpeg failed (exit {proc.returncode}) rendering shot "
                             f"{look.number}:\n{tail}")
