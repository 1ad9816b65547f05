"""Sound: each clip's loudness (EBU R128) and the AAC pieces an output is joined from.

Everything runs in-process through PyAV's copy of libavfilter, so a clip's sound costs no
process start. Invariants:

* **One clock.** A clip's sound is read against its own picture: sample 0 is the instant of
  the clip's first video frame. Sound that starts late is preceded by silence, sound that
  starts early loses what comes before the picture, and a clip without sound is silence.
* **Measured where it is used.** Loudness is read over exactly the samples of the frames a
  segment takes, after the same resampling and remixing the piece gets.
* **One encode.** A piece is the clip's sound resampled to 48 kHz stereo, levelled, cut to
  exactly the samples :mod:`.seams` placed it at, faded at its cuts, and encoded to AAC once.
  It holds ``samples + 1024`` samples of packets (the encoder delay first), all of them whole
  AAC frames except, in the last piece of an output, the last.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter
from av.audio.frame import AudioFrame
from av.filter.context import FilterContext

from ..errors import MediaError
from .seams import AAC_FRAME, AUDIO_RATE

AUDIO_BITRATE = 192_000
# ffmpeg's "fast" AAC coder: about 3x less CPU than its default (twoloop), and at 192 kb/s no
# less faithful (SI-SDR 37.9 against 33.8 dB on a tones-and-noise test): the join of clips
# that already match is bound by this encode.
AAC_OPTIONS = {"aac_coder": "fast"}
SILENT_LUFS = -69.0  # the R128 absolute gate is -70: anything measured below is silence
MAX_GAIN = 30.0  # dB; a near-silent clip is lifted this far at most, not made into noise
SILENCE_DB = -50  # a stretch quieter than this for SILENCE_MIN seconds is silence
SILENCE_MIN = 1.0
# dB: the most the meter's true peak (the sound oversampled 4x by libswresample's default
# filter) can exceed the sample peak: 20 log10 of the largest sum of |taps| of one phase of
# that filter, 2.35 (7.43 dB). tests/test_sound.py derives it from the library in use.
TRUE_PEAK_OVERSHOOT = 7.5
_STEREO = f"sample_fmts=fltp:sample_rates={AUDIO_RATE}:channel_layouts=stereo"


def encoder_version() -> str:
    """The libavcodec PyAV carries (it encodes the AAC pieces), for their keys."""
    return ".".join(map(str, av.library_versions["libavcodec"]))


@dataclass(frozen=True)
class Level:
    """What an EBU R128 meter read over the used part of a clip's sound."""

    integrated: float | None  # LUFS; None when there was nothing above the gate
    peak: float | None  # dBFS, the sample peak; None for digital silence
    silences: tuple[tuple[float, float], ...]  # (start, end) in seconds from the clip's frame 0

    def gain(self, target: float | None) -> float:
        """dB that bring this sound to ``target`` LUFS (0 for silence or no target)."""
        if target is None or self.integrated is None:
            return 0.0
        return max(-MAX_GAIN, min(MAX_GAIN, target - self.integrated))

    def passes(self, gain: float, limit: float) -> bool | None:
        """Whether, raised by ``gain`` dB, this sound's true peak passes ``limit`` dBTP, when
        the sample peak tells; None when only the true peak can (then read it: its four-times
        oversampling is a third of measuring, so it is read only then).

        The true peak is never below the sample peak (the oversampling keeps every sample) and
        never more than TRUE_PEAK_OVERSHOOT above it: the answer is the one the true peak
        would give.
        """
        if self.peak is None:
            return False
        if self.peak + gain > limit:
            return True
        # The meter prints both peaks to three decimals: the most the true peak could read,
        # given the sample peak read, is rounded up twice.
        most = (10 ** (self.peak / 20) + 0.0005) * 10 ** (TRUE_PEAK_OVERSHOOT / 20) + 0.0005
        return None if 20 * math.log10(most) + gain > limit else False


@dataclass(frozen=True)
class Source:
    """Where a clip's sound is: its file, its audio stream, and when its picture starts."""

    path: Path
    audio_index: int | None  # None: the clip has no sound (it becomes silence)
    start: float  # seconds: the presentation time of the clip's first video frame


# --------------------------------------------------------------------------- graphs


def _pull(graph: av.filter.Graph) -> Iterator[AudioFrame]:
    while True:
        try:
            frame = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        assert isinstance(frame, AudioFrame)
        yield frame


def _chain(graph: av.filter.Graph, first: FilterContext, filters: list[tuple[str, str]]) -> None:
    node = first
    for name, args in filters:
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    node.link_to(graph.add("abuffersink"))


def _frames(source: Source, filters: list[tuple[str, str]]) -> Iterator[AudioFrame]:
    """The clip's sound, on its picture's clock at 48 kHz stereo, through ``filters``."""
    graph = av.filter.Graph()
    if source.audio_index is None:
        # A clip without sound: silence, until a trim in ``filters`` ends it.
        _chain(graph, graph.add("anullsrc", f"r={AUDIO_RATE}:cl=stereo"),
               [("aformat", _STEREO), *filters])
        graph.configure()
        yield from _pull(graph)
        return
    try:
        with av.open(str(source.path), metadata_errors="replace") as container:
            stream = container.streams[source.audio_index]
            assert isinstance(stream, av.AudioStream)
            tb = stream.time_base or Fraction(1, stream.sample_rate or AUDIO_RATE)
            # Shift by the picture's start, then let the resampler pad or drop to reach 0.
            shift = round(source.start / tb)
            _chain(graph, graph.add_abuffer(template=stream), [
                ("asetpts", f"PTS-{shift}"),
                ("aresample", f"{AUDIO_RATE}:async=1:first_pts=0"),
                ("aformat", _STEREO), *filters])
            graph.configure()
            for frame in container.decode(stream):
                if not _push(graph, frame):
                    break  # a trim has all it needs: the rest of the file is not read
                yield from _pull(graph)
            else:
                _push(graph, None)
    except av.FFmpegError as exc:
        raise MediaError(f"{source.path.name}: cannot read its sound: {exc}") from exc
    yield from _pull(graph)


def _push(graph: av.filter.Graph, frame: AudioFrame | None) -> bool:
    """Feed the graph; False once it wants no more input."""
    try:
        graph.push(frame)
    except av.error.EOFError:
        return False
    return True


class Sound:
    """A clip's sound, decoded once for all its uses when it is short enough to keep.

    A shot's sound is measured, then levelled and encoded: both read the same samples, so
    the decoded frames (48 kHz stereo float, ``samples`` of them at most: under 16 MB for
    KEEP_SECONDS) are kept between the two. Longer sound is decoded again for each use.
    """

    KEEP_SECONDS = 40
    KEEP_FRAME = 8192

    def __init__(self, source: Source, samples: int | None = None) -> None:
        self.source = source
        self.samples = samples
        self._kept: list[AudioFrame] | None = None

    def through(self, filters: list[tuple[str, str]]) -> Iterator[AudioFrame]:
        """The sound from the clip's frame 0, through ``filters``."""
        keep = (self.source.audio_index is not None and self.samples is not None
                and self.samples <= self.KEEP_SECONDS * AUDIO_RATE)
        if not keep:
            yield from _frames(self.source, filters)
            return
        if self._kept is None:
            # Kept in frames of KEEP_FRAME samples, not the decoder's 1024: each later pass
            # then pushes a few frames through its filters, not hundreds.
            self._kept = list(_frames(self.source, [("atrim", f"end_sample={self.samples}"),
                                                    ("asetnsamples", f"n={self.KEEP_FRAME}:p=0")]))
        graph = av.filter.Graph()
        head = graph.add_abuffer(sample_rate=AUDIO_RATE, format="fltp", layout="stereo",
                                 time_base=Fraction(1, AUDIO_RATE))
        _chain(graph, head, filters)
        graph.configure()
        for frame in self._kept:
            if not _push(graph, frame):
                break
            yield from _pull(graph)
        else:
            _push(graph, None)
        yield from _pull(graph)


# --------------------------------------------------------------------------- measuring


def _db(linear: float) -> float | None:
    return 20 * math.log10(linear) if linear > 0 else None


def measure(clip: Sound, samples: int, first: int = 0) -> Level:
    """Loudness, sample peak and silences of ``samples`` of the clip's sound from ``first``."""
    integrated = -70.0
    peak = 0.0
    silences: list[tuple[float, float]] = []
    silent_from: float | None = None
    for frame in clip.through([*_span(samples, first), ("ebur128", "peak=sample:metadata=1"),
                               ("silencedetect", f"n={SILENCE_DB}dB:d={SILENCE_MIN}")]):
        meta = frame.metadata
        integrated = float(meta.get("lavfi.r128.I", integrated))
        peak = max(peak, float(meta.get("lavfi.r128.sample_peak", 0.0)))
        if "lavfi.silence_start" in meta:
            silent_from = max(0.0, float(meta["lavfi.silence_start"]))
        if "lavfi.silence_end" in meta and silent_from is not None:
            silences.append((silent_from, float(meta["lavfi.silence_end"])))
            silent_from = None
    if silent_from is not None:  # silent to the end
        silences.append((silent_from, samples / AUDIO_RATE))
    return Level(integrated=integrated if integrated > SILENT_LUFS else None,
                 peak=_db(peak), silences=tuple(silences))


def true_peak(clip: Sound, samples: int, first: int = 0) -> float | None:
    """The true peak (dBTP, EBU R128's 4x oversampled peak) of ``samples`` of the clip's sound
    from ``first``; None for digital silence."""
    peak = 0.0
    for frame in clip.through([*_span(samples, first), ("ebur128", "peak=true:metadata=1")]):
        peak = max(peak, float(frame.metadata.get("lavfi.r128.true_peak", 0.0)))
    return _db(peak)


def _span(samples: int, first: int) -> list[tuple[str, str]]:
    return [("atrim", f"start_sample={first}:end_sample={first + samples}"),
            ("asetpts", "N/SR/TB")]


# --------------------------------------------------------------------------- pieces


@dataclass(frozen=True)
class Cut:
    """The part of a clip's sound one piece holds, and how it is levelled."""

    offset: int  # first sample, counted from the clip's frame 0
    samples: int
    fade_in: int = 0
    fade_out: int = 0
    gain: float = 0.0  # dB
    ceiling: float | None = None  # dBTP to limit peaks to, when the gain would pass it


def _levelling(cut: Cut) -> list[tuple[str, str]]:
    filters = []
    if cut.gain:
        filters.append(("volume", f"volume={cut.gain:.4f}dB:precision=float"))
    if cut.ceiling is not None:
        # Sample peaks below the ceiling leave true peaks (between samples) a little headroom;
        # latency=1 keeps the limiter's look-ahead from shifting the sound late.
        limit = 10 ** ((cut.ceiling - 0.5) / 20)
        filters.append(("alimiter", f"limit={limit:.6f}:attack=5:release=50:level=0:latency=1"))
    return filters


def _shaping(cut: Cut) -> list[tuple[str, str]]:
    filters = [
        ("atrim", f"start_sample={cut.offset}:end_sample={cut.offset + cut.samples}"),
        ("asetpts", "N/SR/TB"),
        # A clip whose sound ends early is padded with silence to the exact length.
        ("apad", f"whole_len={cut.samples}"),
        ("atrim", f"end_sample={cut.samples}"),
    ]
    if cut.fade_in:
        filters.append(("afade", f"t=in:ss=0:ns={cut.fade_in}:curve=qsin"))
    if cut.fade_out:
        filters.append(("afade", f"t=out:ss={cut.samples - cut.fade_out}:ns={cut.fade_out}:curve=qsin"))
    return filters


def encode_piece(clip: Sound, cut: Cut, out: Path) -> None:
    """Encode one piece of sound to ``out`` (an MP4 holding one AAC stream); check its packets."""
    if cut.samples < 1:
        raise MediaError(f"a piece of sound needs at least 1 sample, not {cut.samples}")
    durations: list[int] = []
    try:
        with av.open(str(out), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo",
                                          options=AAC_OPTIONS)
            stream.bit_rate = AUDIO_BITRATE
            for frame in clip.through(_levelling(cut) + _shaping(cut)):
                for packet in stream.encode(frame):
                    durations.append(packet.duration or 0)
                    container.mux(packet)
            for packet in stream.encode(None):
                durations.append(packet.duration or 0)
                container.mux(packet)
    except av.FFmpegError as exc:
        raise MediaError(f"{out.name}: cannot encode sound: {exc}") from exc
    whole = -(-cut.samples // AAC_FRAME) + 1  # the encoder delay, then the samples
    if len(durations) != whole or sum(durations) != cut.samples + AAC_FRAME:
        raise MediaError(
            f"{out.name}: the AAC encoder gave {len(durations)} packets of {sum(durations)} "
            f"samples for {cut.samples} samples; want {whole} packets of {cut.samples + AAC_FRAME}")
