"""brief + capabilities -> Plan: how many calls, of which durations, cut where.

A pure function: same input, same plan, byte for byte. The rules, in order:

1. Cuts fall only on the brief's own shot boundaries. A shot that needs more seconds
   than one call allows is split into pieces at sentence ends, never mid-sentence.
2. Durations the brief gives (timecodes, hints, YAML ``seconds``) are kept. The rest of
   the target is shared equally among the other shots, in whole output frames, with the
   remainder placed by position. Nothing depends on a shot's wording, so editing one
   shot's words never moves another shot's duration (or its cache key).
3. Each call asks for a duration the model accepts: the fewest billed seconds that still
   cover the shot. Unforced shots may be given the next shorter allowed duration when
   the total still covers the target (e.g. 6+6+4+4 instead of 6+6+6+6 for 20 s on 4/6/8).
4. Every shot records how many output frames it contributes; the stitcher takes exactly
   those, so the output is exactly the target (crossfade overlaps included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from ..errors import BriefError, CapabilityError
from .brief import Brief, Segment
from .capabilities import Capabilities, parse_size


@dataclass(frozen=True)
class PlanOptions:
    """What the user asked for on top of the brief; None means 'from the brief or model'."""

    seconds: float | None = None
    size: str | None = None
    fps: int | None = None
    audio: bool | None = None
    seed: int | None = None
    take: int = 1
    crossfade: float = 0.0
    style: str | None = None
    default_shot_seconds: int = 5
    max_target_seconds: float = 600.0


class PlannedShot(BaseModel):
    """One provider call and the part of the output it fills."""

    model_config = ConfigDict(frozen=True)

    index: int
    prompt: str
    seconds: int
    billed_seconds: int
    audio: bool
    frames: int
    use_seconds: float
    trim_seconds: float
    source: tuple[int, int]
    fixed: bool
    take: int


class Plan(BaseModel):
    """The ordered shots of a brief under one model's capabilities."""

    model_config = ConfigDict(frozen=True)

    model: str
    seconds: float
    billed_seconds: int
    size: str
    fps: int
    audio: bool
    seed: int | None
    crossfade: float
    crossfade_frames: int
    frames: int
    title: str | None
    style: str | None
    shots: tuple[PlannedShot, ...]


@dataclass(frozen=True)
class _Unit:
    """A piece of the brief that becomes one call: a segment or a sentence group of one."""

    segment: int
    prompt: str
    source: tuple[int, int]
    seconds: float | None  # fixed by the brief, or None for a share of the rest


def billed(caps: Capabilities, seconds: int) -> int:
    """Seconds the vendor bills for one call of ``seconds`` (whole billing blocks)."""
    block = caps.billing_block
    return -(-seconds // block) * block


def _compose(prompt: str, style: str | None) -> str:
    if not style:
        return prompt
    stop = "" if prompt.endswith((".", "!", "?", "。", "！", "？", "…")) else "."
    return f"{prompt}{stop} Style: {style}"


def _group_sentences(sentences: list[tuple[str, tuple[int, int]]], n: int) -> list[list[int]]:
    """Split sentences into ``n`` contiguous groups of similar length (by characters)."""
    lengths = [len(s) for s, _ in sentences]
    total, cuts, acc, j = sum(lengths), [], 0, 1
    for i, length in enumerate(lengths[:-1]):
        acc += length
        remaining_sentences = len(lengths) - i - 1
        must_cut = remaining_sentences == n - j
        if j < n and (acc >= total * j / n or must_cut):
            cuts.append(i + 1)
            j += 1
    bounds = [0, *cuts, len(lengths)]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]


def _split(seg: Segment, k: int, text: str, n: int, seconds: float | None, cap: int) -> list[_Unit]:
    if n == 1:
        return [_Unit(k, seg.prompt, (seg.start, seg.end), seconds)]
    sentences = seg.sentences(text)
    if len(sentences) < n:
        need = f"{seconds:g} s" if seconds else "its share of the target"
        raise BriefError(
            f"shot {k + 1} needs {need}, more than one call allows ({cap} s), and it has "
            f"{len(sentences)} sentence(s) where {n} are needed: shots are only split at "
            "sentence ends. Split it into more sentences or shots, lower the target, or "
            "choose a model with a longer per-call cap."
        )
    units = []
    for group in _group_sentences(sentences, n):
        prompt = " ".join([seg.context] * bool(seg.context) + [sentences[i][0] for i in group])
        span = (sentences[group[0]][1][0], sentences[group[-1]][1][1])
        units.append(_Unit(k, prompt, span, seconds / n if seconds else None))
    return units


def _share(total: int, count: int) -> list[int]:
    """``total`` split into ``count`` whole parts, larger parts first."""
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _free_durations(caps: Capabilities, frames: int, count: int, fps: int) -> list[int]:
    """Allowed durations for ``count`` unforced shots that together cover ``frames``.

    All shots take the shortest duration covering an equal share; then as many as
    possible (the last ones) step down to the next shorter duration while the total
    still covers the target. Depends only on counts, never on wording.
    """
    share = frames / count / fps
    base = caps.nearest_duration(share)
    if base is None:  # only when crossfade overlaps push a piece past the cap
        raise BriefError(
            f"each shot needs {share:g} s including crossfade overlaps, more than the "
            f"{caps.max_seconds} s {caps.model} makes per call: shorten the crossfade or "
            "add shots"
        )
    lower = [d for d in caps.durations if d < base]
    durations = [base] * count
    if lower:
        step = base - lower[-1]
        can = (count * base * fps - frames) // (step * fps)
        for i in range(count - min(count, can), count):
            durations[i] = lower[-1]
    return durations


def _fill(caps_frames: list[int], total: int) -> list[int]:
    """Water-fill ``total`` frames into shots capped at ``caps_frames``, as evenly as possible."""
    order = sorted(range(len(caps_frames)), key=lambda i: (caps_frames[i], i))
    out = [0] * len(caps_frames)
    left, remaining = total, len(caps_frames)
    for i in order:
        out[i] = min(caps_frames[i], left // remaining)
        left -= out[i]
        remaining -= 1
    for i in range(len(out)):  # place the remainder by position, within each cap
        if left and out[i] < caps_frames[i]:
            add = min(left, caps_frames[i] - out[i])
            out[i] += add
            left -= add
    return out


def _target(brief: Brief, opts: PlanOptions, segments: list[Segment]) -> float:
    if opts.seconds is not None:
        target = float(opts.seconds)
    elif brief.seconds is not None:
        target = brief.seconds
    else:
        target = sum(s.seconds or opts.default_shot_seconds for s in segments)
    if not 0 < target <= opts.max_target_seconds:
        raise BriefError(
            f"target of {target:g} s is outside 0 < seconds <= {opts.max_target_seconds:g} "
            "(the configured maximum, SHOTLINE_MAX_TARGET_SECONDS)"
        )
    return target


def _units(brief: Brief, caps: Capabilities, target: float) -> list[_Unit]:
    segments = list(brief.segments)
    fixed = sum(s.seconds for s in segments if s.seconds is not None)
    free = [s for s in segments if s.seconds is None]
    if fixed > target + 1e-9 or (free and fixed >= target - 1e-9):
        raise BriefError(
            f"the brief fixes {fixed:g} s of shot durations, leaving no room in the "
            f"{target:g} s target for {len(free)} more shot(s): raise --seconds or drop "
            "some durations" if free else
            f"the brief fixes {fixed:g} s of shot durations but the target is {target:g} s: "
            "make them agree (or leave --seconds out)"
        )
    if not free and abs(fixed - target) > 1e-6:
        raise BriefError(
            f"the brief's shot durations add up to {fixed:g} s but the target is {target:g} s: "
            "make them agree (or leave --seconds out)"
        )
    share = (target - fixed) / len(free) if free else 0.0
    pieces_free = max(1, math.ceil(share / caps.max_seconds - 1e-9)) if free else 1
    units: list[_Unit] = []
    for k, seg in enumerate(segments):
        need = seg.seconds if seg.seconds is not None else share
        n = max(1, math.ceil(need / caps.max_seconds - 1e-9))
        units += _split(seg, k, brief.text, n if seg.seconds else pieces_free, seg.seconds,
                        caps.max_seconds)
    return units


def _resolve_av(brief: Brief, caps: Capabilities, opts: PlanOptions) -> tuple[str, int, bool]:
    size = opts.size or brief.settings.get("size") or caps.default_size
    parse_size(size)
    if size not in caps.sizes:
        raise CapabilityError(
            f"{caps.model} cannot render {size}; allowed sizes: {', '.join(caps.sizes)}"
        )
    fps = opts.fps or brief.settings.get("fps") or caps.default_fps
    if not 1 <= fps <= 120:
        raise CapabilityError(f"fps {fps} is outside 1..120")
    audio = opts.audio if opts.audio is not None else (brief.audio or caps.audio == "always")
    if audio and caps.audio == "none":
        raise CapabilityError(f"{caps.model} makes no audio; use --no-audio or another model")
    return size, int(fps), bool(audio)


def plan(brief: Brief, caps: Capabilities, opts: PlanOptions | None = None) -> Plan:
    """Plan ``brief`` for the model ``caps``; raises BriefError/CapabilityError with a fix."""
    opts = opts or PlanOptions()
    caps.require_active()
    size, fps, audio = _resolve_av(brief, caps, opts)
    target = _target(brief, opts, list(brief.segments))
    units = _units(brief, caps, target)
    xf = round(opts.crossfade * fps)
    total = round(target * fps) + (len(units) - 1) * xf
    fixed_frames = [round(u.seconds * fps) if u.seconds is not None else None for u in units]
    free_idx = [i for i, f in enumerate(fixed_frames) if f is None]
    free_total = total - sum(f for f in fixed_frames if f is not None)

    # Every written shot is shown for at least the model's shortest call; pieces the
    # planner split off a long shot may be trimmed shorter (they are one shot to the user).
    written = len({units[i].segment for i in free_idx})
    if free_idx and free_total < written * caps.min_seconds * fps:
        raise BriefError(
            f"{written} shot(s) need at least {caps.min_seconds} s each on {caps.model} "
            f"(its shortest call), but only {free_total / fps:g} s of the {target:g} s target "
            f"is left for them: raise --seconds to at least "
            f"{target + (written * caps.min_seconds * fps - free_total) / fps:g}, "
            "merge shots, or choose a model with shorter calls"
        )
    durations: list[int] = [0] * len(units)
    frames: list[int] = [0] * len(units)
    if free_idx:
        for i, d in zip(free_idx, _free_durations(caps, free_total, len(free_idx), fps),
                        strict=True):
            durations[i] = d
        filled = _fill([durations[i] * fps for i in free_idx], free_total)
        for i, count in zip(free_idx, filled, strict=True):
            frames[i] = count
    # With no free shot to absorb them, crossfade overlaps are shared by the fixed shots.
    extra = _share(total - sum(f or 0 for f in fixed_frames), len(units)) if not free_idx else None
    for i, fixed in enumerate(fixed_frames):
        if fixed is None:
            continue
        frames[i] = fixed + (extra[i] if extra else 0)
        nearest = caps.nearest_duration(frames[i] / fps)
        if nearest is None:
            raise BriefError(
                f"shot {units[i].segment + 1} asks for {frames[i] / fps:g} s but {caps.model} "
                f"makes at most {caps.max_seconds} s per call"
            )
        durations[i] = nearest
    if any(f <= xf for f in frames):
        raise BriefError(
            f"a crossfade of {opts.crossfade:g} s is longer than a shot; use a shorter one"
        )

    style = opts.style or brief.style
    call_audio = audio or caps.audio == "always"
    shots = tuple(
        PlannedShot(
            index=i,
            prompt=_compose(u.prompt, style),
            seconds=durations[i],
            billed_seconds=billed(caps, durations[i]),
            audio=call_audio,
            frames=frames[i],
            use_seconds=round(frames[i] / fps, 6),
            trim_seconds=round(durations[i] - frames[i] / fps, 6),
            source=u.source,
            fixed=u.seconds is not None,
            take=opts.take,
        )
        for i, u in enumerate(units)
    )
    return Plan(
        model=caps.model,
        seconds=target,
        billed_seconds=sum(s.billed_seconds for s in shots),
        size=size,
        fps=fps,
        audio=audio,
        seed=opts.seed if opts.seed is not None else brief.settings.get("seed"),
        crossfade=opts.crossfade,
        crossfade_frames=xf,
        frames=round(target * fps),
        title=brief.title,
        style=style,
        shots=shots,
    )


def parse_transition(spec: str) -> float:
    """``none`` -> 0.0, ``crossfade:0.5`` -> 0.5 (seconds of overlap at each join)."""
    if spec in ("", "none", "cut"):
        return 0.0
    kind, _, value = spec.partition(":")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if kind != "crossfade" or not 0 < seconds <= 2:
        raise BriefError(
            f"transition {spec!r} is not understood: use 'none' or 'crossfade:SECONDS' "
            "with 0 < SECONDS <= 2, e.g. crossfade:0.5"
        )
    return seconds
