"""The join: pieces copied packet by packet into one MP4, with nothing decoded or encoded.

Invariants:

* Video runs (frames ``[first, end)`` of a piece or of a clip that already matches) are
  copied in order; each run's timestamps are moved, in whole frames, to where it starts in
  the output. A run starts on a keyframe and GOPs are closed, so no copied frame refers to a
  frame that was left out. Every run must share one set of codec parameters, one time base
  and one decoder delay; anything else is refused before a byte is written.
* Sound pieces are copied whole, back to back on their 1024-sample grid (:mod:`.seams`): the
  first piece's encoder delay is hidden by the MP4 edit list, every later one's is the silent
  frame at its cut. Nothing accumulates, so there is no drift however many pieces there are.
* Packets are written in time order across both streams, one input file open per stream at
  a time: memory stays the same whatever the length. The index goes first (faststart), in a
  second pass the muxer makes over the finished file.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import OutputContainer
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


def _video(runs: Sequence[Run], fps: int, out: Stream, params: _Params,
           ) -> Iterator[tuple[Fraction, Packet[Any]]]:
    tick = _frame_ticks(params.time_base, fps, runs[0].path)
    at = 0  # output frame where the current run starts
    for run in runs:
        with _open(run.path) as container:
            stream = container.streams[run.stream]
            here = _params(stream, container, run)
            if here != params:
                raise MediaError(f"{run.path.name}: its video cannot be joined by copy to "
                                 f"{runs[0].path.name} (codec parameters, size, time base or "
                                 "frame reordering differ)")
            shift = (at - run.first) * tick
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None or packet.dts is None:
                    continue
                frame = round(Fraction(packet.pts, tick))
                if not run.first <= frame < run.end:
                    continue
                pts, dts = packet.pts + shift, packet.dts + shift
                packet.stream = out
                packet.time_base = params.time_base
                packet.pts, packet.dts = pts, dts
                yield Fraction(dts) * params.time_base, packet
        at += run.end - run.first


def _sound(pieces: Sequence[Path], out: av.AudioStream, extradata: bytes,
           ) -> Iterator[tuple[Fraction, Packet[Any]]]:
    at = -AAC_FRAME  # the first piece's encoder delay sits before 0, under the edit list
    base = Fraction(1, AUDIO_RATE)
    for path in pieces:
        with _open(path) as container:
            stream = container.streams.audio[0]
            if bytes(stream.codec_context.extradata or b"") != extradata:
                raise MediaError(f"{path.name}: its AAC parameters differ from the first piece's")
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                duration = packet.duration or AAC_FRAME
                packet.stream = out
                packet.time_base = base
                packet.pts = packet.dts = at
                packet.duration = duration
                yield Fraction(at, AUDIO_RATE), packet
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


def join(runs: Sequence[Run], sound: Sequence[Path], out: Path, *, fps: int) -> None:
    """Copy ``runs`` (and ``sound``, if any) into the new MP4 ``out``."""
    if not runs:
        raise MediaError("nothing to join: no video")
    with _open(runs[0].path) as first:
        template = first.streams[runs[0].stream]
        params = _params(template, first, runs[0])
        try:
            container: OutputContainer = av.open(
                str(out), "w", format="mp4",
                # A 48 kHz movie clock keeps the edit lists sample-exact (the default is 1 ms).
                options={"movflags": "+faststart", "movie_timescale": str(AUDIO_RATE)})
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"{out}: cannot write the output: {exc}") from exc
        with container:
            video = container.add_stream_from_template(template)
            streams = [_video(runs, fps, video, params)]
            if sound:
                with _open(sound[0]) as head:
                    audio = container.add_stream_from_template(head.streams.audio[0])
                    extradata = bytes(head.streams.audio[0].codec_context.extradata or b"")
                streams.append(_sound(sound, audio, extradata))
            try:
                for _, packet in heapq.merge(*streams, key=lambda item: item[0]):
                    container.mux(packet)
            except av.FFmpegError as exc:
                raise MediaError(f"{out.name}: the join failed: {exc}") from exc
