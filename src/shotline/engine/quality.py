"""The quality gate: what the automatic checks found in a clip or an output, as flags.

A flag names a kind of fault, where it is (seconds from the start of the clip, or of the
output once placed), how bad it is and what a reviewer should look for. Invariants:

* Flags describe; they never change a clip. ``fail`` marks a clip a person would reject
  (mostly black, frozen or silent, or no sound at all where sound was asked for, or much
  shorter than asked); ``warn`` marks something to look at. Only ``fail`` can trigger the
  optional automatic re-roll.
* An output's flags are its shots' flags, moved to where each shot sits in the output and
  numbered by shot (from 1): the output is a copy of its segments, so nothing new can appear
  except at the joins, which :func:`.media.verify` checks.
* Pure: no I/O. The measurements come from :mod:`.normalise` and :mod:`.sound`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Kind = Literal["black", "frozen", "silent", "duration", "letterbox"]
Severity = Literal["fail", "warn"]

BLACK_MIN = 0.5  # seconds of black picture worth a flag
FROZEN_MIN = 1.0  # seconds of an unchanging picture worth a flag
SILENT_MIN = 1.0  # seconds of silence worth a flag, when sound was asked for
FAIL_SHARE = 0.5  # a fault over at least this share of the clip fails it
BAR_SHARE = 0.04  # black bars this thick (of the frame, on each side) are letterboxing
SHAPE_SLACK = 0.02  # aspect ratios this close need no bars to fit


@dataclass(frozen=True)
class Flag:
    """One finding of the gate; ``start``/``end`` in seconds, None when it spans everything."""

    kind: Kind
    severity: Severity
    message: str
    start: float | None = None
    end: float | None = None
    shot: int | None = None  # numbered from 1, on an output's flags

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("start", "end"):
            if data[key] is not None:
                data[key] = round(data[key], 3)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Flag:
        return cls(kind=data["kind"], severity=data["severity"], message=data["message"],
                   start=data.get("start"), end=data.get("end"), shot=data.get("shot"))


def failing(flags: Iterable[Flag]) -> list[Flag]:
    return [f for f in flags if f.severity == "fail"]


def _intervals(kind: Kind, spans: Sequence[tuple[float, float]], seconds: float, least: float,
               what: str) -> list[Flag]:
    spans = [(max(0.0, s), min(seconds, e)) for s, e in spans if min(seconds, e) - s >= least]
    if not spans:
        return []
    share = sum(e - s for s, e in spans) / seconds if seconds > 0 else 1.0
    severity: Severity = "fail" if share >= FAIL_SHARE else "warn"
    return [Flag(kind, severity, f"{what} for {e - s:.1f} s ({share:.0%} of the shot)", s, e)
            for s, e in spans]


def _minus(spans: Sequence[tuple[float, float]], holes: Sequence[tuple[float, float]],
           ) -> list[tuple[float, float]]:
    """``spans`` with every part that is also in ``holes`` taken out."""
    out = list(spans)
    for hs, he in holes:
        cut: list[tuple[float, float]] = []
        for s, e in out:
            if he <= s or hs >= e:
                cut.append((s, e))
                continue
            if s < hs:
                cut.append((s, hs))
            if he < e:
                cut.append((he, e))
        out = cut
    return out


def picture(black: Sequence[tuple[float, float]], frozen: Sequence[tuple[float, float]],
            seconds: float) -> list[Flag]:
    """Black and frozen stretches (a black stretch is frozen too: it is reported as black)."""
    return (_intervals("black", black, seconds, BLACK_MIN, "black picture")
            + _intervals("frozen", _minus(frozen, black), seconds, FROZEN_MIN, "frozen picture"))


def sound(has_audio: bool, integrated: float | None, silences: Sequence[tuple[float, float]],
          seconds: float) -> list[Flag]:
    """Silence, for a shot that was asked to have sound."""
    if not has_audio:
        return [Flag("silent", "fail", "the clip has no sound, but sound was asked for")]
    if integrated is None:
        return [Flag("silent", "fail", "the clip's sound is silent", 0.0, seconds)]
    return _intervals("silent", silences, seconds, SILENT_MIN, "silence")


def duration(clip_seconds: float, asked_seconds: float | None, padded: bool) -> list[Flag]:
    """A clip shorter than the call asked for (its last frame held to fill the shot, if so)."""
    flags = []
    if asked_seconds is not None and clip_seconds < asked_seconds - 0.25:
        severity: Severity = "fail" if clip_seconds < asked_seconds * 0.75 else "warn"
        flags.append(Flag("duration", severity,
                          f"the clip is {clip_seconds:.2f} s long; {asked_seconds:g} s was asked for"))
    if padded:
        flags.append(Flag("duration", "warn", "the clip was one frame short: its last frame is "
                          "shown twice", clip_seconds, clip_seconds))
    return flags


def letterbox(content: tuple[int, int] | None, frame: tuple[int, int],
              clip_shape: float, out_shape: float, fit: str) -> list[Flag]:
    """Bars inside the clip's own picture, or bars added to fit another shape."""
    flags = []
    if content is not None:
        (cw, ch), (fw, fh) = content, frame
        side = max((fw - cw) / fw, (fh - ch) / fh) / 2 if fw and fh else 0.0
        if side >= BAR_SHARE:
            flags.append(Flag("letterbox", "warn", f"the clip has black bars ({side:.0%} of the "
                              f"frame on each side); its picture is {cw}x{ch} of {fw}x{fh}"))
    if fit == "letterbox" and abs(clip_shape / out_shape - 1) > SHAPE_SLACK:
        flags.append(Flag("letterbox", "warn", f"the clip's shape ({clip_shape:.3f}:1) is not "
                          f"the output's ({out_shape:.3f}:1), so bars were added to fit it"))
    return flags


def placed(flags: Iterable[Flag], shot: int, at: float, seconds: float) -> list[Flag]:
    """A shot's flags as the output shows them: moved by ``at`` seconds, numbered by shot."""
    out = []
    for f in flags:
        start = at if f.start is None else at + f.start
        end = at + seconds if f.end is None else at + min(f.end, seconds)
        out.append(replace(f, start=start, end=max(start, end), shot=shot + 1))
    return out
