"""The local provider's animatic: one shot drawn as a moving title card, encoded by ffmpeg.

Text in any script is drawn with fonts installed as ordinary dependencies (no system
font, no download, no drawtext): Noto Sans for Latin, Greek and Cyrillic, Noto Sans
Arabic and Hebrew, Noto Sans CJK (the Japanese, Korean or Simplified Chinese face, by the
text) and Noto Sans Symbols. Each character is drawn in the first of them whose
character map has it (:class:`Text`), so nothing is drawn as an empty box; Arabic is
joined into its contextual forms and right-to-left lines are put in visual order before
drawing, since Pillow's basic layout neither shapes nor reorders. Chinese and Japanese
wrap between any two characters. The video is made by the ffmpeg binary shipped in the
``imageio-ffmpeg`` wheel:

* a still canvas, a little wider than the frame, holds the card (shot number, model, take
  and the prompt, wrapped and cut with "..." when it does not fit); a crop window slides
  over it, so the card drifts;
* a strip along the bottom (a clock, a frame counter and a progress bar) is drawn per frame
  and piped raw to ffmpeg, so no two consecutive frames are alike;
* the background colour and the tone's pitch come from a hash of (prompt, seed, take), so
  consecutive shots cut visibly and the same request draws the same picture;
* input images are honoured: the cast's names are written under the shot number and each
  reference image is drawn as a thumbnail labelled with its member's name, in a row under
  the card; a first frame is the clip's first frame exactly (fitted to cover the frame),
  fading into the card, and a last frame fades in to be the clip's last frame;
* the encode is bit-exact (``+bitexact`` flags, no metadata, fixed encoder threads), so the
  same :class:`Look` gives the same bytes on the same machine and ffmpeg build.

Pure apart from :func:`render`, which writes one file.
"""

from __future__ import annotations

import colorsys
import contextlib
import functools
import hashlib
import io
import os
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Literal, Protocol

import arabic_reshaper
from bidi import get_display
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..engine.media import ffmpeg_exe
from ..errors import MediaError

MAX_TEXT = 600  # characters of the prompt that are laid out at all
Codec = Literal["h264", "hevc"]
PixFmt = Literal["yuv420p", "yuv444p"]
RGB = tuple[int, int, int]

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
    cast: tuple[str, ...] = ()
    first_frame: bytes | None = field(default=None, repr=False)  # encoded images
    last_frame: bytes | None = field(default=None, repr=False)
    references: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)  # (name, image)

    @property
    def frames(self) -> int:
        return self.seconds * self.fps

    @property
    def fade_frames(self) -> int:
        """How long a first frame takes to give way to the card (and the card to a last one)."""
        return max(1, min(self.fps // 2, self.frames // 4))


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


@dataclass(frozen=True)
class Face:
    """One font file (one face of a collection), at a weight for variable fonts."""

    name: str
    path: str
    index: int = 0
    weight: int | None = None


def _shipped(package: str, name: str) -> str:
    return str(resources.files(package).joinpath(name))


LATIN = Face("Noto Sans", _shipped("manimgx_fonts", "NotoSans[wght].ttf"))
ARABIC = Face("Noto Sans Arabic", _shipped("manimgx_fonts", "NotoSansArabic[wght].ttf"))
HEBREW = Face("Noto Sans Hebrew", _shipped("manimgx_fonts", "NotoSansHebrew[wght].ttf"))
SYMBOLS = Face("Noto Sans Symbols", _shipped("manimgx_fonts", "NotoSansSymbols[wght].ttf"))
_CJK_FILE = _shipped("manimgx_fonts_cjk", "NotoSansCJK-VF.otf.ttc")
# The collection's faces: 0 JP, 1 KR, 2 SC; its variable default is the thinnest weight.
CJK = {"ja": Face("Noto Sans CJK JP", _CJK_FILE, 0, 400),
       "ko": Face("Noto Sans CJK KR", _CJK_FILE, 1, 400),
       "zh": Face("Noto Sans CJK SC", _CJK_FILE, 2, 400)}
_KANA = re.compile("[\u3040-\u30ff]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
# Characters a line may break between without a space (Chinese, Japanese, fullwidth forms).
_CJK_CHAR = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef"
_TOKEN = re.compile(f"\\s+|[{_CJK_CHAR}]|[^\\s{_CJK_CHAR}]+")


@functools.cache
def coverage(face: Face) -> frozenset[int]:
    """The code points ``face`` has glyphs for (its character map), read once."""
    font = TTFont(face.path, fontNumber=face.index, lazy=True)
    try:
        return frozenset(font.getBestCmap())
    finally:
        font.close()


def faces_for(text: str) -> tuple[Face, ...]:
    """The fonts to try, in order, for ``text`` (the CJK face follows its language)."""
    cjk = CJK["ja"] if _KANA.search(text) else CJK["ko"] if _HANGUL.search(text) else CJK["zh"]
    return LATIN, ARABIC, HEBREW, cjk, SYMBOLS


class Measure(Protocol):
    def getlength(self, text: str) -> float: ...


class Text:
    """Text at one size in a chain of fonts: each character in the first that has it.

    Not shared between threads: a FreeType face is not thread-safe, so each drawing makes
    its own (opening a face is cheap; the character maps are read once per process).
    """

    def __init__(self, size: int, faces: tuple[Face, ...] = (LATIN,)) -> None:
        self.size = size
        self.faces = faces
        self._fonts: dict[Face, ImageFont.FreeTypeFont] = {}

    def font(self, face: Face) -> ImageFont.FreeTypeFont:
        if face not in self._fonts:
            font = ImageFont.truetype(face.path, self.size, index=face.index,
                                      layout_engine=ImageFont.Layout.BASIC)
            if face.weight is not None:
                font.set_variation_by_axes([face.weight])
            self._fonts[face] = font
        return self._fonts[face]

    def face_of(self, char: str) -> Face | None:
        return next((f for f in self.faces if ord(char) in coverage(f)), None)

    def runs(self, line: str) -> list[tuple[Face, str]]:
        """``line`` cut into runs that one font draws whole; a character no font has
        becomes "?" (never an empty box)."""
        out: list[tuple[Face, str]] = []
        for char in line:
            face: Face | None
            if out and (char.isspace() or unicodedata.combining(char)) and \
                    ord(char) in coverage(out[-1][0]):
                face = out[-1][0]  # spaces and marks stay with the run they sit in
            else:
                face = self.face_of(char)
            if face is None:
                face, char = self.faces[0], "?"
            if out and out[-1][0] == face:
                out[-1] = (face, out[-1][1] + char)
            else:
                out.append((face, char))
        return out

    def getlength(self, line: str) -> float:
        return sum(self.font(face).getlength(run) for face, run in self.runs(line))

    def ascent(self) -> int:
        return int(self.font(self.faces[0]).getmetrics()[0])

    def draw(self, draw: ImageDraw.ImageDraw, xy: tuple[float, float], line: str,
             fill: RGB) -> None:
        """Draw ``line`` (already in visual order) with its top-left at ``xy``."""
        x, baseline = xy[0], xy[1] + self.ascent()
        for face, run in self.runs(line):
            font = self.font(face)
            draw.text((x, baseline), run, font=font, fill=fill, anchor="ls")
            x += font.getlength(run)


def right_to_left(text: str) -> bool:
    """Whether ``text`` reads right to left: its first strong character is Arabic or Hebrew."""
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind in ("R", "AL"):
            return True
        if kind == "L":
            return False
    return False


def visual(line: str, rtl: bool) -> str:
    """A wrapped line (logical order, Arabic already joined) in the order it is drawn."""
    return str(get_display(line, base_dir="R" if rtl else "L"))


def _fit(line: str, font: Measure, width: int, more: bool = False) -> str:
    """``line`` cut to ``width`` pixels; '...' marks a cut (or, with ``more``, hidden lines)."""
    if not more and font.getlength(line) <= width:
        return line
    while line and font.getlength(line + "...") > width:
        line = line[:-1]
    return line.rstrip() + "..."


def _tokens(text: str) -> Iterator[tuple[str, bool]]:
    """Words (and single CJK characters) with whether a space came before each."""
    space = False
    for m in _TOKEN.finditer(text):
        if m.group().isspace():
            space = True
            continue
        yield m.group(), space
        space = False


def wrap(text: str, font: Measure, width: int, max_lines: int) -> list[str]:
    """Greedy wrap into at most ``max_lines`` lines of at most ``width`` pixels; a line
    breaks at spaces, or between any two Chinese or Japanese characters."""
    lines: list[str] = []
    for word, space in _tokens(text[:MAX_TEXT]):
        trial = f"{lines[-1]}{' ' if space else ''}{word}" if lines else word
        if lines and font.getlength(trial) <= width:
            lines[-1] = trial
        elif len(lines) == max_lines:
            return [*(_fit(x, font, width) for x in lines[:-1]), _fit(lines[-1], font, width, True)]
        else:
            lines.append(word)
    return [_fit(x, font, width, more=len(text) > MAX_TEXT and i == len(lines) - 1)
            for i, x in enumerate(lines)]


def prompt_lines(look: Look, font: Text, width: int, max_lines: int) -> list[str]:
    """The prompt as drawn on the card: joined (Arabic), wrapped, in visual order."""
    rtl = right_to_left(look.prompt)
    shaped = arabic_reshaper.reshape(look.prompt) if rtl else look.prompt
    return [visual(line, rtl) for line in wrap(shaped, font, width, max_lines)]


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
    title = Text(max(8, round(look.height * 0.075)))
    label_font = Text(max(7, round(look.height * 0.055)))
    body = Text(max(7, round(look.height * 0.055)), faces_for(look.prompt))
    title.draw(draw, (x0 + pad, y0 + pad), f"SHOT {look.number}", (255, 255, 255))
    label = _fit(f"{look.model}  take {look.take}", label_font, w // 2)
    label_font.draw(draw, (x0 + w - pad - label_font.getlength(label), y0 + pad), label,
                    (230, 230, 230))
    line_h = round(look.height * 0.055 * 1.25)
    top = y0 + pad + round(look.height * 0.075 * 1.6)
    if look.cast:
        names = Text(label_font.size, faces_for(" ".join(look.cast)))
        cast = _fit("CAST: " + ", ".join(look.cast), names, w - 2 * pad)
        names.draw(draw, (x0 + pad, top), cast, (255, 236, 150))
        top += line_h
    rtl = right_to_left(look.prompt)
    lines = prompt_lines(look, body, w - 2 * pad, max(1, (y0 + h - top - pad) // max(1, line_h)))
    for n, line in enumerate(lines):
        x = x0 + w - pad - body.getlength(line) if rtl else x0 + pad  # right-aligned for RTL
        body.draw(draw, (x, top + n * line_h), line, (255, 255, 255))
    _thumbnails(image, look, x0, y0 + h + pad, w)
    return image


def _thumbnails(image: Image.Image, look: Look, x0: int, top: int, width: int) -> None:
    """The reference images in a row under the card, each labelled with its member's name."""
    if not look.references:
        return
    side = min(look.height - strip_height(look) - top - 2, width // len(look.references) - 4)
    if side < 8:
        return  # no room at this size: the cast line on the card still names them
    font = Text(max(6, side // 6), faces_for(" ".join(n for n, _ in look.references)))
    draw = ImageDraw.Draw(image)
    for i, (name, data) in enumerate(look.references):
        with Image.open(io.BytesIO(data)) as picture:
            thumb = ImageOps.contain(picture.convert("RGB"), (side, side))
        x = x0 + i * (side + 4)
        image.paste(thumb, (x, top))
        band = max(font.size + 2, side // 5)
        draw.rectangle((x, top + side - band, x + side - 1, top + side - 1), fill=(0, 0, 0))
        font.draw(draw, (x + 2, top + side - band), _fit(name, font, side - 4), (255, 255, 255))


def still(data: bytes, look: Look) -> Image.Image:
    """An input image as a full frame: scaled to cover the frame, centred, cropped."""
    with Image.open(io.BytesIO(data)) as picture:
        return ImageOps.fit(picture.convert("RGB"), (look.width, look.height),
                            method=Image.Resampling.LANCZOS)


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
        self.font = Text(max(7, round(look.height * 0.05)))

    def frame(self, i: int) -> bytes:
        look, image = self.look, self.base.copy()
        w, h = image.size
        draw = ImageDraw.Draw(image)
        bar_h = max(2, round(h * 0.16))
        bar_y = h - bar_h - max(1, round(h * 0.2))
        clock = f"t={i / look.fps:.2f}s / {look.seconds}s   frame {i + 1}/{look.frames}"
        self.font.draw(draw, (round(w * 0.06), max(0, bar_y - round(look.height * 0.07))), clock,
                       (255, 255, 255))
        draw.rectangle((0, bar_y, w - 1, bar_y + bar_h - 1), fill=(0, 0, 0))
        filled = round(w * (i + 1) / look.frames)
        draw.rectangle((0, bar_y, filled - 1, bar_y + bar_h - 1), fill=(255, 255, 255))
        return image.tobytes()


def _graph(look: Look, frames: tuple[int, ...] = ()) -> str:
    """Slide a frame-sized window over the still canvas and lay the strip over its bottom,
    then the first frame over the start (fading out) and the last over the end (fading in).

    Both pictures are converted to YUV before they move (the canvas once, the strip per
    frame), so no full-size colour conversion happens per frame. ``frames`` are the input
    numbers of the first and last frame stills, where the look has them.
    """
    last = max(1, look.frames - 1)
    matrix = "scale=out_color_matrix=bt709:out_range=tv:flags=bitexact+accurate_rnd"
    yuv = f"{matrix},format={look.pix_fmt}"
    blend = "yuv444" if look.pix_fmt == "yuv444p" else "yuv420"
    graph = (f"[1:v]{yuv},loop=loop={look.frames - 1}:size=1:start=0,settb=1/{look.fps},setpts=N,"
             f"crop=w={look.width}:h={look.height}:x='floor({drift(look)}*n/{last})':y=0[bg];"
             f"[0:v]{yuv},settb=1/{look.fps},setpts=N[band];"
             f"[bg][band]overlay=x=0:y={look.height - strip_height(look)}:format={blend}:"
             "eof_action=endall")
    k = look.fade_frames
    # The first still stays whole on frame 0, then fades out; the last fades in to be whole
    # on the last frame.
    fades = []
    if look.first_frame is not None:
        fades.append(f"fade=t=out:s=0:n={k}:alpha=1")
    if look.last_frame is not None:
        fades.append(f"fade=t=in:s={max(0, look.frames - 1 - k)}:n={k}:alpha=1")
    for n, (index, fade) in enumerate(zip(frames, fades, strict=True)):
        graph += (f"[v{n}];[{index}:v]{matrix},format={'yuva444p' if blend == 'yuv444' else 'yuva420p'},"
                  f"loop=loop={look.frames - 1}:size=1:start=0,settb=1/{look.fps},setpts=N,{fade}"
                  f"[s{n}];[v{n}][s{n}]overlay=format={blend}:eof_action=endall")
    return graph + "[v]"


def ffmpeg_argv(look: Look, still: Path, dest: Path, frames: tuple[Path, ...] = ()) -> list[str]:
    """The ffmpeg command; ``frames`` are the first and last frame stills the look has."""
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{look.width}x{strip_height(look)}",
            "-framerate", str(look.fps), "-i", "pipe:0", "-framerate", str(look.fps), "-i", str(still)]
    for path in frames:
        argv += ["-framerate", str(look.fps), "-i", str(path)]
    inputs = tuple(range(2, 2 + len(frames)))
    maps = ["-map", "[v]"]
    if look.audio:
        hz = tone(look.prompt, look.seed, look.take)
        expr = f"0.10*sin(2*PI*{hz}*t)+0.05*sin(2*PI*{hz * 3 / 2}*t)"
        layout = "mono" if look.channels == 1 else "stereo"
        argv += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{'|'.join([expr] * look.channels)}'"
                 f":s={look.audio_rate}:c={layout}:d={look.seconds * look.audio_ratio}"]
        maps += ["-map", f"{2 + len(frames)}:a", "-c:a", "aac", "-b:a", "96k",
                 "-ar", str(look.audio_rate), "-ac", str(look.channels), "-flags:a", "+bitexact"]
    return [*argv, "-filter_complex", _graph(look, inputs), "-filter_complex_threads", "1", *maps,
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
        # Named for this process (see scratch.py): if it is killed, a later one removes it.
        with tempfile.TemporaryDirectory(prefix=f".render.{os.getpid()}-", suffix=".part",
                                         dir=dest.parent) as tmp:
            card = Path(tmp) / "canvas.png"
            canvas(look).save(card, format="PNG", compress_level=1)
            frames = []
            for name, data in (("first", look.first_frame), ("last", look.last_frame)):
                if data is not None:
                    frames.append(Path(tmp) / f"{name}.png")
                    still(data, look).save(frames[-1], format="PNG", compress_level=1)
            with (Path(tmp) / "ffmpeg.log").open("w+b") as log:
                _encode(look, card, dest, log, tuple(frames))
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _encode(look: Look, card: Path, dest: Path, log: IO[bytes], frames: tuple[Path, ...]) -> None:
    strip = Strip(look)
    with subprocess.Popen(ffmpeg_argv(look, card, dest, frames), stdin=subprocess.PIPE,
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
