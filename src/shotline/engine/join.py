"""The join: pieces copied packet by packet into one MP4, with nothing decoded or encoded.

Invariants:

* Video runs (frames ``[first, end)`` of a piece or of a clip that already matches) are
  copied in order; each run's timestamps are moved, in whole frames, to where it starts in
  the output. A run starts on a keyframe and GOPs are closed, so no copied frame refers to a
  frame that was left out. Every run must share one set of codec parameters, one time base
  and one decoder delay; a run that does not stops the join when it is reached (runs and
  pieces are read lazily, so they may still be in the making when the join begins; the
  unfinished file is the caller's to discard).
* Sound pieces are copied whole, back to back on their 1024-sample grid (:mod:`.seams`): the
  first piece's encoder delay is hidden by the MP4 edit list, every later one's is the silent
  frame at its cut. Nothing accumulates, so there is no drift however many pieces there are.
* Packets are written in time order across both streams, one input file open per stream at
  a time: memory stays the same whatever the length. The index goes first (faststart), in a
  second pass the muxer makes over the finished file.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.stream import Stream

from ..errors import MediaError
from .seams import AAC_FRAME, AUDIO_RATE


@dataclass(frozen=True)
class Run:
    """Frames ``[first, end)`` of the video stream ``stream`` of ``path``, copied as they are."""

    path: Path
    first: int
    end: int
    stream: int = 0


@dataclass(frozen=True)
class _Params:
    """What must be the same in every run for the copy to decode as one stream."""

    extradata: bytes
    size: tuple[int, int]
    time_base: Fraction
    delay: int  # frames the first dts is ahead of the first pts (B-frame reordering)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as exc:
        raise MediaError(f"{path.name}: cannot open for the join: {exc}") from exc


def _frame_ticks(time_base: Fraction, fps: int, path: Path) -> int:
    ticks = Fraction(1, fps) / time_base
    if ticks.denominator != 1:
        raise MediaError(f"{path.name}: its time base {time_base} cannot hold {fps} fps exactly")
    return int(ticks)


# Packets are merged in time order by a float key (seconds): exact enough to interleave, and
# each stream's own keys never go backwards. Timestamps themselves stay integers.


def _video(first: Run, head: InputContainer, runs: Iterable[Run], fps: int, out: Stream,
           params: _Params) -> Iterator[tuple[float, Packet[Any]]]:
    """The packets of ``first`` (already open as ``head``) and of ``runs``, retimed."""
    tick = _frame_ticks(params.time_base, fps, first.path)
    seconds = float(params.time_base)
    at = 0  # output frame where the current run starts
    for run in itertools.chain([first], runs):
        with nullcontext(head) if run is first else _open(run.path) as container:
            stream = container.streams[run.stream]
            if run is not first and _params(stream, container, run) != params:
                raise MediaError(f"{run.path.name}: its video cannot be joined by copy to "
                                 f"{first.path.name} (codec parameters, size, time base or "
                                 "frame reordering differ)")
            shift = (at - run.first) * tick
            for packet in container.demux(stream):
                pts, dts = packet.pts, packet.dts
                if packet.size == 0 or pts is None or dts is None:
                    continue
                frame = (2 * pts + tick) // (2 * tick)  # the nearest frame
                if not run.first <= frame < run.end:
                    continue
                # Its time base is already the run's, which is params.time_base (checked).
                packet.stream = out
                packet.pts, packet.dts = pts + shift, dts + shift
                yield (dts + shift) * seconds, packet
        at += run.end - run.first


def _sound(first: Path, head: InputContainer, pieces: Iterable[Path], out: av.AudioStream,
           extradata: bytes) -> Iterator[tuple[float, Packet[Any]]]:
    """The packets of the piece ``first`` (already open as ``head``) and of ``pieces``."""
    at = -AAC_FRAME  # the first piece's encoder delay sits before 0, under the edit list
    base = Fraction(1, AUDIO_RATE)
    for path in itertools.chain([first], pieces):
        with nullcontext(head) if path is first else _open(path) as container:
            stream = container.streams.audio[0]
            if bytes(stream.codec_context.extradata or b"") != extradata:
                raise MediaError(f"{path.name}: its AAC parameters differ from the first piece's")
            if stream.time_base != base:
                raise MediaError(f"{path.name}: its sound is timed in {stream.time_base} s, "
                                 f"not in samples (1/{AUDIO_RATE} s)")
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                duration = packet.duration or AAC_FRAME
                packet.stream = out
                packet.pts = packet.dts = at
                packet.duration = duration
                yield at / AUDIO_RATE, packet
                at += duration


def _params(stream: Stream, container: av.container.InputContainer, run: Run) -> _Params:
    if not isinstance(stream, av.VideoStream) or stream.time_base is None:
        raise MediaError(f"{run.path.name}: stream {run.stream} is not a video stream")
    first: tuple[int, int] | None = None
    for packet in container.demux(stream):  # the first packet says how far dts runs ahead
        if packet.size and packet.pts is not None and packet.dts is not None:
            first = (packet.pts, packet.dts)
            break
    container.seek(0, stream=stream)
    if first is None:
        raise MediaError(f"{run.path.name}: no video packets")
    return _Params(extradata=bytes(stream.codec_context.extradata or b""),
                   size=(stream.width, stream.height), time_base=stream.time_base,
                   delay=first[0] - first[1])


def join(runs: Iterable[Run], sound: Iterable[Path], out: Path, *, fps: int) -> None:
    """Copy ``runs`` (and ``sound``, if any) into the new MP4 ``out``.

    Both are read lazily, a run or a piece at a time as the join reaches it: they may come
    from segments still being made (each waits only for what it is about to copy).
    """
    pending_runs, pending_sound = iter(runs), iter(sound)
    first = next(pending_runs, None)
    if first is None:
        raise MediaError("nothing to join: no video")
    with _open(first.path) as head:
        template = head.streams[first.stream]
        params = _params(template, head, first)
        try:
            container: OutputContainer = av.open(
                str(out), "w", format="mp4",
                # A 48 kHz movie clock keeps the edit lists sample-exact (the default is 1 ms).
                options={"movflags": "+faststart", "movie_timescale": str(AUDIO_RATE)})
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"{out}: cannot write the output: {exc}") from exc
        with container:
            video = container.add_stream_from_template(template)
            streams = [_video(first, head, pending_runs, fps, video, params)]
            with ExitStack() as heads:
                if (piece := next(pending_sound, None)) is not None:
                    heard = heads.enter_context(_open(piece))
                    audio = container.add_stream_from_template(heard.streams.audio[0])
                    extradata = bytes(heard.streams.audio[0].codec_context.extradata or b"")
                    streams.append(_sound(piece, heard, pending_sound, audio, extradata))
                try:
                    for _, packet in heapq.merge(*streams, key=lambda item: item[0]):
                        container.mux(packet)
                except av.FFmpegError as exc:
                    raise MediaError(f"{out.name}: the join failed: {exc}") from exc
