"""Where each segment of an output sits: its frames, its crossfades and its piece of sound.

Pure arithmetic, no I/O. The output is joined by stream copy from one video piece and one
AAC piece per segment (plus one re-encoded window per crossfade), so every boundary has to
be exact before anything is encoded. Invariants (property-tested in tests/test_seams.py):

* **Video.** Segment k's frame 0 is output frame ``start_k = sum(frames_j - crossfade, j < k)``
  and the output has ``sum(frames) - (K - 1) * crossfade`` frames. A crossfade shows the last
  ``crossfade`` frames of one segment blended with the first ``crossfade`` of the next.
* **Sound is on a 1024-sample grid.** Every AAC encode starts with one frame (1024 samples) of
  encoder delay. The MP4 edit list hides only the first piece's, so on the output timeline
  every later piece begins with 1024 samples of near-silence, and joining pieces by copy only
  keeps time if each piece but the last holds a whole number of AAC frames. So pieces start
  on multiples of 1024: piece k's silent first frame is the grid frame holding the cut (or the
  middle of the crossfade), and it holds ``samples`` real samples after it.
* **Sound keeps its own picture's clock.** Sample ``s`` of clip k (counted from the clip's
  frame 0) plays at output sample ``samples_at(start_k) + s``; a piece starts ``offset``
  samples into its clip to make that true. So audio/video drift is zero by construction, over
  any number of segments; what a cut costs is the ~21 ms under its grid frame.
* The pieces fill the output's sound exactly: ``sum(samples + 1024) - 1024 ==
  samples_at(total frames)``.

A crossfade in sound is a dip: the outgoing clip fades out towards the silent grid frame in
the middle of the picture's crossfade and the incoming one fades in after it. Only a dip can
be made from each clip alone, so that a segment's sound never depends on its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MediaError

AUDIO_RATE = 48_000
AAC_FRAME = 1024  # samples per AAC frame, and the encoder delay of every AAC encode
FADE = 240  # samples (5 ms) faded at each side of a cut, so the silent frame makes no click


def samples_at(frame: int, fps: int) -> int:
    """The output sample where output frame ``frame`` begins (exact when fps divides 48000)."""
    return (frame * AUDIO_RATE + fps // 2) // fps


@dataclass(frozen=True)
class Place:
    """One segment on the output timeline."""

    index: int
    frames: int  # frames taken from the clip
    start: int  # output frame of the clip's frame 0
    head: int  # frames at the start that are inside the incoming crossfade
    tail: int  # frames at the end that are inside the outgoing crossfade
    audio_at: int  # output sample where this piece's first AAC frame begins (-1024 for the first)
    offset: int  # clip sample (from the clip's frame 0) encoded first
    samples: int  # clip samples encoded
    fade_in: int  # samples faded in at the start of the piece
    fade_out: int  # samples faded out at its end

    @property
    def shown(self) -> tuple[int, int]:
        """The clip frames copied from this segment's own piece (the rest are in windows)."""
        return self.head, self.frames - self.tail


def total_frames(frames: Sequence[int], crossfade: int) -> int:
    return sum(frames) - max(0, len(frames) - 1) * crossfade


def min_frames(fps: int, crossfade: int = 0) -> int:
    """The shortest segment that can carry a piece of its own sound between two neighbours."""
    # A cut's silent grid frame starts up to one AAC frame before the cut and ends up to one
    # after it, at both ends of a segment; three AAC frames leave at least one of its own.
    return crossfade + max(1, -(-3 * AAC_FRAME * fps // AUDIO_RATE))


def layout(frames: Sequence[int], fps: int, crossfade: int = 0, *, audio: bool = True) -> list[Place]:
    """Place every segment; with ``audio``, raise MediaError if one is too short for its sound."""
    if not frames:
        raise MediaError("nothing to place: no segments")
    if len(frames) == 1:
        crossfade = 0
    shortest = min_frames(fps, crossfade)
    if audio and len(frames) > 1 and (short := [k for k, n in enumerate(frames) if n < shortest]):
        k = short[0]
        raise MediaError(
            f"segment {k + 1} has {frames[k]} frames: with sound, every segment needs at least "
            f"{shortest} frames at {fps} fps (or render without audio)")
    starts = []
    at = 0
    for n in frames:
        starts.append(at)
        at += n - crossfade
    end = samples_at(total_frames(frames, crossfade), fps)
    # grid[k]: where piece k's silent first frame begins. The first is hidden by the edit list.
    grid = [-AAC_FRAME]
    for k in range(1, len(frames)):
        middle = (samples_at(starts[k], fps) + samples_at(starts[k] + crossfade, fps)) // 2
        grid.append(middle // AAC_FRAME * AAC_FRAME)
    places = []
    for k, n in enumerate(frames):
        first = grid[k] + AAC_FRAME  # the first sample of the piece that is heard
        stop = grid[k + 1] if k + 1 < len(frames) else end
        video = samples_at(starts[k], fps)
        head = crossfade if k > 0 else 0
        tail = crossfade if k + 1 < len(frames) else 0
        samples = stop - first
        if audio and samples < 1:  # unreachable when every segment has min_frames
            raise MediaError(f"segment {k + 1}: no room for its sound")
        fade_in = 0 if k == 0 else max(FADE, samples_at(starts[k] + head, fps) - first)
        fade_out = 0 if k + 1 == len(frames) else max(FADE, stop - samples_at(starts[k + 1], fps))
        places.append(Place(
            index=k, frames=n, start=starts[k], head=head, tail=tail, audio_at=grid[k],
            offset=first - video, samples=max(samples, 0), fade_in=max(0, min(fade_in, samples)),
            fade_out=max(0, min(fade_out, samples))))
    return places
