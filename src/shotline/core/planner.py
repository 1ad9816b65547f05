"""brief + capabilities -> Plan: how many calls, of which durations, cut where.

A pure function: same input, same plan, byte for byte. The rules, in order:

1. Cuts fall only on the brief's own shot boundaries. A shot that needs more seconds
   than one call allows is split into the fewest pieces that fit, at sentence ends,
   never mid-sentence.
2. Durations the brief gives (timecodes, hints, YAML ``seconds``) are kept.
3. With a target (``--seconds`` or YAML ``seconds``), the rest of it is shared equally
   among the other shots, in whole output frames. Nothing depends on a shot's wording,
   so editing one shot's words never moves another shot's duration (or its cache key).
4. Without a target, each shot's length comes from its own words: the time it takes to
   read them aloud (:data:`WORDS_PER_SECOND`, or :data:`CJK_CHARS_PER_SECOND` for
   Chinese, Japanese and Korean, counted by characters), at least
   ``default_shot_seconds``, taken to the nearest duration the model accepts; a shot
   longer than one call is split at sentence ends into pieces that each fit. Again a
   shot's length depends on its own words only.
5. Billed seconds are the exact optimum: for every shot with a fixed length and for the
   shots sharing the rest of the target, the calls' durations are the combination of
   allowed durations (and billing blocks) with the fewest billed seconds that covers
   the time (:func:`cover`), e.g. 40 s on a 1-15 s model is 15+15+10, never 14+14+14.
6. Every shot records how many output frames it contributes; the stitcher takes exactly
   those, so the output is exactly the target (crossfade overlaps included).
7. A duration hint written in the text (not a timecode or a YAML field) that makes the
   brief bill more than twice what it bills without it is refused, quoting it, unless
   the caller confirms (``PlanOptions.yes``): it may be an age, a year or a typo.
8. Cast and image inputs (see :mod:`.cast`): every cast member a shot shows has its
   description added to each of the shot's prompts, and its pictures go to the calls
   as reference images where the model takes them (else the shot notes why not). A
   shot's first frame goes to its first call and its last frame to its last; a model
   that takes no first (or last) frame refuses the brief. Images are known by the hash
   of their bytes (``Brief.images``, filled by the library), never by their path.
9. Continuations: every piece of a shot split at sentence ends after the first, and a shot
   the brief marks as continuing, starts from the last frame the output shows of the shot
   before it (``PlannedShot.continues``), where the model takes a first frame and
   ``PlanOptions.chain`` is on, unless that would cost the shot its cast's reference
   images. Such a chain renders in order (:meth:`Plan.chains`); a shot that would continue
   but does not says why (``chain_note``).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from ..errors import BriefError, CapabilityError, ShotlineError
from .brief import Brief, ImageRef, Segment
from .capabilities import Capabilities, parse_size
from .cast import choose, describe, members_in
from .inputs import MAX_PROMPT_CHARS

WORDS_PER_SECOND = 2.5  # 150 words a minute: an unhurried narration pace
CJK_CHARS_PER_SECOND = 4.0  # 240 characters a minute of Chinese, Japanese or Korean
_CJK = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff]"
)


@dataclass(frozen=True)
class PlanOptions:
    """What the user asked for on top of the brief; None means 'from the brief or model'."""

    seconds: float | None = None
    size: str | None = None
    fps: int | None = None
    audio: bool | None = None
    seed: int | None = None
    take: int = 1
    takes: int = 1  # candidates of every shot, numbered from ``take`` (core/takes.py)
    crossfade: float = 0.0
    style: str | None = None
    default_shot_seconds: int = 5
    max_target_seconds: float = 600.0
    yes: bool = False  # accept duration hints that more than double the billed seconds
    scope: str | None = None  # whose cache the shots' keys are in (see keys.py)
    chain: bool = True  # continuations start from the previous shot's last frame


class PlanImage(ImageRef):
    """An input image of the plan: what was read (:class:`ImageRef`) and where, as written."""

    source: str


class CastEntry(BaseModel):
    """A cast member as the plan carries it, its pictures read."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    kind: str | None = None
    images: tuple[PlanImage, ...] = ()


class ShotReference(BaseModel):
    """One reference image a call sends: whose picture it is, and its bytes' hash."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str


class PlannedShot(BaseModel):
    """One provider call and the part of the output it fills.

    ``index`` is the position in ``Plan.shots`` (from 0); people see ``number`` (from 1).
    ``hint`` is the text of the brief read as this shot's duration, if any. ``cast`` names
    the members it shows (their descriptions are in ``prompt``); ``references`` are the
    pictures it sends, ``first_frame``/``last_frame`` the images it starts from and ends on
    (a continuation will fill ``first_frame`` from the shot before), and
    ``references_note`` says why pictures of its cast are not sent, where some are not.
    ``continues``: the call starts from the last frame the output shows of the shot before
    (known only once that clip is made, so the engine sends it); ``chain_note`` says why a
    shot that could continue the one before does not.
    """

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
    hint: str | None = None
    cast: tuple[str, ...] = ()
    references: tuple[ShotReference, ...] = ()
    first_frame: PlanImage | None = None
    last_frame: PlanImage | None = None
    references_note: str | None = None
    # Every candidate's take number when the shot has several (core/takes.py); ``take``
    # is the one picked for the output.
    takes: tuple[int, ...] = ()
    continues: bool = False
    chain_note: str | None = None

    @property
    def number(self) -> int:
        return self.index + 1


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
    cast: tuple[CastEntry, ...] = ()
    # The cache the shots' keys belong to (a tenant id; None: the CLI's, or shared). Kept
    # with the plan, so a re-roll or a resumed render computes the keys it was made with.
    scope: str | None = None

    def chains(self) -> list[tuple[int, ...]]:
        """The runs of shots (indexes) that render one after another, each continuing the
        one before; only runs of two or more. The rest render concurrently."""
        runs: list[list[int]] = []
        for shot in self.shots:
            if shot.continues and runs and runs[-1][-1] == shot.index - 1:
                runs[-1].append(shot.index)
            elif shot.continues:
                runs.append([shot.index - 1, shot.index])
        return [tuple(r) for r in runs]

    def image(self, sha256: str) -> PlanImage:
        """What the plan knows of the image whose bytes hash to ``sha256``."""
        for found in self.images():
            if found.sha256 == sha256:
                return found
        raise KeyError(sha256)

    def images(self) -> list[PlanImage]:
        """Every input image of the plan (cast pictures and frames), once each."""
        every = [i for member in self.cast for i in member.images]
        every += [f for s in self.shots for f in (s.first_frame, s.last_frame) if f is not None]
        return list({i.sha256: i for i in every}.values())


@dataclass(frozen=True)
class _Group:
    """The calls one written shot becomes (several when it is split at sentence ends)."""

    segment: int
    pieces: tuple[tuple[str, tuple[int, int]], ...]  # prompt and source of each call
    seconds: float | None  # the shot's length, or None for a share of the target
    fixed: bool  # the length was given by the brief
    hint: str | None = None
    weights: tuple[float, ...] = ()  # reading time of each piece


def billed(caps: Capabilities, seconds: int) -> int:
    """Seconds the vendor bills for one call of ``seconds`` (whole billing blocks)."""
    block = caps.billing_block
    return -(-seconds // block) * block


def reading_seconds(text: str) -> float:
    """How long ``text`` takes to read aloud: words, and CJK characters, at a steady pace."""
    cjk = len(_CJK.findall(text))
    words = sum(1 for w in _CJK.sub(" ", text).split() if any(c.isalnum() for c in w))
    return words / WORDS_PER_SECOND + cjk / CJK_CHARS_PER_SECOND


def cover(caps: Capabilities, count: int, need: int) -> list[int] | None:
    """The ``count`` allowed durations with the fewest billed seconds that last ``need`` s.

    Exact (a dynamic programme over the allowed durations and billing blocks); among
    equally cheap answers the one with the least to trim. Longest first; None when even
    ``count`` calls at the cap fall short. Depends only on its arguments, never on words.
    """
    ds = caps.durations
    need = max(need, 0)
    if count <= 0:
        return [] if need == 0 else None
    if count * ds[-1] < need:
        return None
    if count * ds[0] >= need:
        return [ds[0]] * count
    if all(d % caps.billing_block == 0 for d in ds):
        return _cover_sums(ds, count, need)
    # For each billed amount only its longest duration can be worth taking.
    longest: dict[int, int] = {}
    for d in ds:
        longest[billed(caps, d)] = max(longest.get(billed(caps, d), 0), d)
    options = sorted(longest.items())
    # layers[j][sum capped at need] = (billed, seconds, sum of squares, last d, previous sum):
    # the fewest billed seconds, then the least to trim, then the most even calls.
    layers: list[dict[int, tuple[int, int, int, int, int]]] = [{0: (0, 0, 0, 0, 0)}]
    for _ in range(count):
        layer: dict[int, tuple[int, int, int, int, int]] = {}
        for s, (cost, secs, squares, _d, _p) in layers[-1].items():
            for c, d in options:
                t, value = min(need, s + d), (cost + c, secs + d, squares + d * d, d, s)
                if t not in layer or value[:3] < layer[t][:3]:
                    layer[t] = value
        layers.append(layer)
    out, s = [], need
    for j in range(count, 0, -1):
        *_, d, s = layers[j][s]
        out.append(d)
    return sorted(out, reverse=True)


def _cover_sums(ds: tuple[int, ...], count: int, need: int) -> list[int] | None:
    """:func:`cover` when billed seconds are the seconds: the smallest reachable sum."""
    reach = [1]  # bit s of reach[j]: some j durations add up to s
    for _ in range(count):
        prev, bits = reach[-1], 0
        for d in ds:
            bits |= prev << d
        reach.append(bits)
    above = reach[count] >> need
    if not above:
        return None
    total = need + (above & -above).bit_length() - 1
    out = []
    for j in range(count, 0, -1):
        # The duration nearest the mean of what is left, among those that can still be
        # completed: the calls come out as even as the allowed durations permit.
        d = min((d for d in ds if total >= d and reach[j - 1] >> (total - d) & 1),
                key=lambda d: (abs(d * j - total), -d))
        out.append(d)
        total -= d
    return sorted(out, reverse=True)


def _compose(prompt: str, style: str | None) -> str:
    if not style:
        return prompt
    stop = "" if prompt.endswith((".", "!", "?", "。", "！", "？", "…", "؟")) else "."
    return f"{prompt}{stop} Style: {style}"


def _partition(weights: list[float], n: int) -> list[list[int]]:
    """``n`` contiguous groups of the items whose heaviest group is as light as possible.

    The dynamic programme over (groups, items) picks, for the first ``i`` items in ``j``
    groups, the last cut ``k`` minimising ``max(best[j-1][k], weight of k..i)``; of equal
    answers the first. The first term grows with ``k`` and the second shrinks, so the best
    ``k`` sits where they cross, and that crossing only moves right as ``i`` grows: one
    pointer per ``j`` finds it, in O(n·m) instead of trying every ``k`` (O(n·m²): seconds
    for a few hundred sentences, hours for a long brief). Same cuts as trying every ``k``
    (tests/test_planner.py holds that search and compares).
    """
    m = len(weights)
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[j][i]: the lightest heaviest group splitting the first i items into j groups.
    best = [[inf] * (m + 1) for _ in range(n + 1)]
    cut = [[0] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for j in range(1, n + 1):
        before, lo = best[j - 1], j - 1
        cross = lo  # the first k at which best[j-1][k] reaches the weight of k..i
        for i in range(j, m - (n - j) + 1):
            hi, total = i - 1, prefix[i]
            cross = max(cross, lo)
            while cross <= hi and before[cross] < total - prefix[cross]:
                cross += 1
            # Before the crossing each k is a strict improvement unless its item weighs
            # nothing (then the first of equal values stays): the last such run's start.
            if cross > lo:
                last = cross - 1
                value = total - prefix[last]
                k = bisect.bisect_left(prefix, prefix[last], lo, last)
            else:
                value, k = inf, lo
            if cross <= hi and before[cross] < value - 1e-12:
                value, k = before[cross], cross
            best[j][i], cut[j][i] = value, k
    bounds, i = [m], m
    for j in range(n, 0, -1):
        i = cut[j][i]
        bounds.append(i)
    bounds.reverse()
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]


def _fewest_groups(weights: list[float], limit: float) -> int:
    """How few contiguous groups keep each under ``limit`` (greedy filling is optimal);
    an item heavier than ``limit`` is a group of its own."""
    groups, load = 1, 0.0
    for w in weights:
        if load > 0 and load + w > limit + 1e-9:
            groups, load = groups + 1, w
        else:
            load += w
    return groups


def _pieces(seg: Segment, k: int, text: str, n: int, need: str, cap: int,
            hint: str | None) -> tuple[tuple[tuple[str, tuple[int, int]], ...], tuple[float, ...]]:
    """``seg`` split into ``n`` calls at sentence ends (or whole when ``n`` is 1)."""
    if n == 1:
        return ((seg.prompt, (seg.start, seg.end)),), (reading_seconds(seg.prompt),)
    sentences = seg.sentences(text)
    if len(sentences) < n:
        asked = f'its hint "{hint}" asks for {need}' if hint else f"it needs {need}"
        raise BriefError(
            f"shot {k + 1}: {asked}, more than one call allows ({cap} s), and it has "
            f"{len(sentences)} sentence(s) where {n} are needed: shots are only split at "
            "sentence ends. Split it into more sentences or shots, lower the target, or "
            "choose a model with a longer per-call cap."
        )
    weights = [reading_seconds(s) for s, _ in sentences]
    pieces, piece_weights = [], []
    for group in _partition(weights, n):
        prompt = " ".join([seg.context] * bool(seg.context) + [sentences[i][0] for i in group])
        pieces.append((prompt, (sentences[group[0]][1][0], sentences[group[-1]][1][1])))
        piece_weights.append(sum(weights[i] for i in group))
    return tuple(pieces), tuple(piece_weights)


def _nearest(caps: Capabilities, seconds: float) -> int:
    """The allowed duration nearest ``seconds`` (the shorter on a tie), at most the cap."""
    return min(caps.durations, key=lambda d: (abs(d - seconds), d))


def _natural_groups(brief: Brief, caps: Capabilities, opts: PlanOptions) -> list[_Group]:
    """No target: each shot lasts what its hint says, or what its words take to read."""
    groups: list[_Group] = []
    floor = float(opts.default_shot_seconds)
    for k, seg in enumerate(brief.segments):
        if seg.seconds is not None:
            n = max(1, math.ceil(seg.seconds / caps.max_seconds - 1e-9))
            pieces, weights = _pieces(seg, k, brief.text, n, f"{seg.seconds:g} s",
                                      caps.max_seconds, seg.hint)
            groups.append(_Group(k, pieces, seg.seconds, True, seg.hint, weights))
            continue
        sentences = seg.sentences(brief.text) or [(seg.prompt, (seg.start, seg.end))]
        reads = [reading_seconds(s) for s, _ in sentences]
        n = _fewest_groups(reads, caps.max_seconds)
        if n == 1:
            read = reading_seconds(seg.prompt)
            groups.append(_Group(k, ((seg.prompt, (seg.start, seg.end)),),
                                 _nearest(caps, max(floor, read)), False, None, (read,)))
            continue
        pieces, piece_weights = _pieces(seg, k, brief.text, n, "", caps.max_seconds, None)
        for piece, read in zip(pieces, piece_weights, strict=True):
            groups.append(_Group(k, (piece,), _nearest(caps, max(floor, read)), False, None,
                                 (read,)))
    return groups


def _target_groups(brief: Brief, caps: Capabilities, target: float) -> list[_Group]:
    """A target: fixed shots keep their durations, the others share the rest equally."""
    segments = list(brief.segments)
    fixed = sum(s.seconds for s in segments if s.seconds is not None)
    free = [s for s in segments if s.seconds is None]
    if fixed > target + 1e-9 or (free and fixed >= target - 1e-9):
        raise BriefError(
            f"the brief fixes {fixed:g} s of shot durations ({_hints(segments)}), leaving no "
            f"room in the {target:g} s target for {len(free)} more shot(s): raise --seconds "
            "or drop some durations" if free else
            f"the brief fixes {fixed:g} s of shot durations ({_hints(segments)}) but the "
            f"target is {target:g} s: make them agree (or leave --seconds out)"
        )
    if not free and abs(fixed - target) > 1e-6:
        raise BriefError(
            f"the brief's shot durations ({_hints(segments)}) add up to {fixed:g} s but the "
            f"target is {target:g} s: make them agree (or leave --seconds out)"
        )
    share = (target - fixed) / len(free) if free else 0.0
    pieces_free = max(1, math.ceil(share / caps.max_seconds - 1e-9)) if free else 1
    groups = []
    for k, seg in enumerate(segments):
        if seg.seconds is not None:
            n = max(1, math.ceil(seg.seconds / caps.max_seconds - 1e-9))
            pieces, weights = _pieces(seg, k, brief.text, n, f"{seg.seconds:g} s",
                                      caps.max_seconds, seg.hint)
            groups.append(_Group(k, pieces, seg.seconds, True, seg.hint, weights))
        else:
            pieces, weights = _pieces(seg, k, brief.text, pieces_free, "its share of the target",
                                      caps.max_seconds, None)
            groups.append(_Group(k, pieces, None, False, None, weights))
    return groups


def _hints(segments: list[Segment]) -> str:
    return ", ".join(f'shot {k + 1}: "{s.hint}"' for k, s in enumerate(segments) if s.hint)


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


def _share(total: int, count: int) -> list[int]:
    """``total`` split into ``count`` whole parts, larger parts first."""
    base, extra = divmod(total, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def _check_target(target: float, opts: PlanOptions) -> float:
    if not 0 < target <= opts.max_target_seconds:
        raise BriefError(
            f"target of {target:g} s is outside 0 < seconds <= {opts.max_target_seconds:g} "
            "(the configured maximum, SHOTLINE_MAX_TARGET_SECONDS)"
        )
    return target


def _resolve_av(brief: Brief, caps: Capabilities, opts: PlanOptions) -> tuple[str, int, bool]:
    size = opts.size or brief.settings.get("size") or caps.default_size
    parse_size(size)
    if size not in caps.sizes:
        raise CapabilityError(
            f"{caps.model} cannot render {size}; allowed sizes: {', '.join(caps.sizes)}"
        )
    fps = next((f for f in (opts.fps, brief.settings.get("fps")) if f is not None),
               caps.default_fps)
    if not 1 <= fps <= 120:
        raise CapabilityError(f"fps {fps} is outside 1..120")
    audio = opts.audio if opts.audio is not None else (brief.audio or caps.audio == "always")
    if audio and caps.audio == "none":
        raise CapabilityError(f"{caps.model} makes no audio; use --no-audio or another model")
    return size, int(fps), bool(audio)


def _allocate(groups: list[_Group], caps: Capabilities, fps: int, target: float,
              xf: int, crossfade: float) -> tuple[list[int], list[int]]:
    """Frames and call durations of every piece: exact target, fewest billed seconds."""
    slots = [(g, i) for g, group in enumerate(groups) for i in range(len(group.pieces))]
    total = round(target * fps) + (len(slots) - 1) * xf
    group_frames = [round(g.seconds * fps) if g.seconds is not None else None for g in groups]
    free = [n for n, (g, _) in enumerate(slots) if group_frames[g] is None]
    if not free:  # with no free shot to absorb them, the fixed ones share crossfade overlaps
        for n, extra in enumerate(_share(total - sum(f or 0 for f in group_frames), len(slots))):
            group_frames[slots[n][0]] = (group_frames[slots[n][0]] or 0) + extra
    free_total = total - sum(f for f in group_frames if f is not None)
    written = len({slots[n][0] for n in free})
    if free and free_total < written * caps.min_seconds * fps:
        raise BriefError(
            f"{written} shot(s) need at least {caps.min_seconds} s each on {caps.model} "
            f"(its shortest call), but only {free_total / fps:g} s of the {target:g} s target "
            f"is left for them: raise --seconds to at least "
            f"{target + (written * caps.min_seconds * fps - free_total) / fps:g}, "
            "merge shots, or choose a model with shorter calls"
        )
    durations, frames = [0] * len(slots), [0] * len(slots)
    for g, group in enumerate(groups):
        count = group_frames[g]
        if count is None:
            continue
        members = [n for n, (h, _) in enumerate(slots) if h == g]
        ds = cover(caps, len(members), -(-count // fps))
        if ds is None:
            raise BriefError(
                f"shot {group.segment + 1} asks for {count / fps:g} s"
                + (f' (its hint "{group.hint}")' if group.hint else "")
                + f" but {caps.model} makes at most {caps.max_seconds} s per call"
            )
        # The longest calls go to the pieces with the most to say.
        order = sorted(range(len(members)), key=lambda i: (-group.weights[i], i))
        for d, i in zip(ds, order, strict=True):
            durations[members[i]] = d
        for n, f in zip(members, _fill([durations[n] * fps for n in members], count),
                        strict=True):
            frames[n] = f
    if free:
        ds = cover(caps, len(free), -(-free_total // fps))
        if ds is None:  # only when crossfade overlaps push a piece past the cap
            raise BriefError(
                f"each shot needs {free_total / len(free) / fps:g} s including crossfade "
                f"overlaps, more than the {caps.max_seconds} s {caps.model} makes per call: "
                "shorten the crossfade or add shots"
            )
        for n, d in zip(free, ds, strict=True):  # by position: wording never moves them
            durations[n] = d
        for n, f in zip(free, _fill([durations[n] * fps for n in free], free_total),
                        strict=True):
            frames[n] = f
    if any(f <= xf for f in frames):
        raise BriefError(f"a crossfade of {crossfade:g} s is longer than a shot; use a shorter one")
    return durations, frames


def _plan(brief: Brief, caps: Capabilities, opts: PlanOptions) -> Plan:
    caps.require_active()
    _check_frames(brief, caps)
    size, fps, audio = _resolve_av(brief, caps, opts)
    explicit = opts.seconds if opts.seconds is not None else brief.seconds
    if explicit is None:
        groups = _natural_groups(brief, caps, opts)
        target = _check_target(sum(g.seconds or 0 for g in groups), opts)
    else:
        target = _check_target(float(explicit), opts)
        groups = _target_groups(brief, caps, target)
    xf = round(opts.crossfade * fps)
    durations, frames = _allocate(groups, caps, fps, target, xf, opts.crossfade)
    style = opts.style or brief.style
    call_audio = audio or caps.audio == "always"
    slots = [(group, piece) for group in groups for piece in group.pieces]
    cast = _cast(brief)
    shots = []
    for i, (group, (prompt, source)) in enumerate(slots):
        seg = brief.segments[group.segment]
        members = members_in(seg, brief.cast)
        pieces = [n for n, (g, _) in enumerate(slots) if g.segment == group.segment]
        first = _image(brief, seg.first_frame) if i == pieces[0] else None
        last = _image(brief, seg.last_frame) if i == pieces[-1] else None
        digests = {src: ref.sha256 for src, ref in brief.images.items()}
        choice = choose(members, caps, seconds=durations[i], first_frame=first is not None,
                        last_frame=last is not None, digest=digests)
        continues, chain_note = False, None
        if i > 0 and first is None and (i != pieces[0] or seg.continues):
            chained = choose(members, caps, seconds=durations[i], first_frame=True,
                             last_frame=last is not None, digest=digests)
            what = ("continues the shot before" if i == pieces[0] else
                    "is a piece of a shot split at a sentence end")
            if not opts.chain:
                chain_note = f"not chained ({what}): --no-chain"
            elif not caps.takes("first_frame"):
                chain_note = (f"not chained ({what}): {caps.model} takes no first frame, so "
                              "it cannot start from the last frame of the shot before")
            elif opts.takes > 1:
                chain_note = (f"not chained ({what}): with --takes {opts.takes} the shot before "
                              "has several takes to choose from, and a continuation starts from one")
            elif chained.references != choice.references:
                chain_note = (f"not chained ({what}): with a first frame {caps.model} would "
                              "not take its cast's reference images")
            else:
                continues = True
        shots.append(PlannedShot(
            index=i,
            prompt=_compose(describe(prompt, members), style),
            seconds=durations[i],
            billed_seconds=billed(caps, durations[i]),
            audio=call_audio,
            frames=frames[i],
            use_seconds=round(frames[i] / fps, 6),
            trim_seconds=round(durations[i] - frames[i] / fps, 6),
            source=source,
            fixed=group.fixed,
            take=opts.take,
            takes=tuple(range(opts.take, opts.take + opts.takes)) if opts.takes > 1 else (),
            hint=group.hint,
            cast=tuple(m.name for m in members),
            references=tuple(ShotReference(name=name, sha256=_read(brief, src).sha256)
                             for name, src in choice.references),
            first_frame=first,
            last_frame=last,
            references_note=choice.note,
            continues=continues,
            chain_note=chain_note,
        ))
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
        shots=tuple(shots),
        cast=cast,
        scope=opts.scope,
    )


def _image(brief: Brief, source: str | None) -> PlanImage | None:
    return None if source is None else _read(brief, source)


def _read(brief: Brief, source: str) -> PlanImage:
    """The image ``source`` names, as the library read it (known by its bytes' hash)."""
    ref = brief.images.get(source)
    if ref is None:
        raise BriefError(f"image {source!r} has not been read: plan through shotline.plan() "
                         "(or the CLI), which reads a brief's images and hashes their bytes")
    return PlanImage(source=source, **ref.model_dump())


def _cast(brief: Brief) -> tuple[CastEntry, ...]:
    return tuple(CastEntry(name=m.name, description=m.description, kind=m.kind,
                           images=tuple(_read(brief, src) for src in m.images))
                 for m in brief.cast)


def _check_frames(brief: Brief, caps: Capabilities) -> None:
    """Refuse a first or last frame the model cannot take: the brief asked for it."""
    for k, seg in enumerate(brief.segments):
        for kind, source in (("first_frame", seg.first_frame), ("last_frame", seg.last_frame)):
            if source is not None and not caps.takes(kind):  # type: ignore[arg-type]
                verb = "starts from" if kind == "first_frame" else "ends on"
                raise CapabilityError(
                    f"shot {k + 1} {verb} {source}, but {caps.model} takes no "
                    f"{kind.replace('_', ' ')}; choose a model that does (`shotline "
                    "providers` lists each model's image inputs) or drop the image")


def plan(brief: Brief, caps: Capabilities, opts: PlanOptions | None = None) -> Plan:
    """Plan ``brief`` for the model ``caps``; raises BriefError/CapabilityError with a fix."""
    opts = opts or PlanOptions()
    result = _plan(brief, caps, opts)
    for shot in result.shots:
        if len(shot.prompt) > MAX_PROMPT_CHARS:
            raise BriefError(
                f"shot {shot.number}'s prompt is {len(shot.prompt):,} characters; a prompt may "
                f"have at most {MAX_PROMPT_CHARS:,} (vendors cut or refuse longer ones): split "
                "it into shorter sentences or more shots")
    if not opts.yes:
        _check_hints(brief, caps, opts, result)
    return result


def _check_hints(brief: Brief, caps: Capabilities, opts: PlanOptions, result: Plan) -> None:
    """Refuse a text hint that more than doubles the billed seconds (see rule 7)."""
    for k, seg in enumerate(brief.segments):
        if seg.hint_kind != "text" or not _could_double(brief, opts, result, seg):
            continue
        without = list(brief.segments)
        without[k] = dataclasses.replace(seg, seconds=None, hint=None, hint_kind=None)
        try:
            other = _plan(dataclasses.replace(brief, segments=tuple(without)), caps, opts)
        except ShotlineError:
            continue  # without the hint the brief cannot be planned: the hint is needed
        if result.billed_seconds > 2 * other.billed_seconds:
            raise BriefError(
                f'shot {k + 1} reads "{seg.hint}" as {seg.seconds:g} s, which makes the brief '
                f"bill {result.billed_seconds} s instead of {other.billed_seconds} s. If it is "
                "a duration, confirm with --yes (yes=True in the library and the API); if it "
                'is not (an age, a year), write it otherwise, e.g. "in her 30s"'
            )


def _could_double(brief: Brief, opts: PlanOptions, result: Plan, seg: Segment) -> bool:
    """Whether planning without ``seg``'s hint could bill less than half of ``result``.

    False only where it provably cannot, which spares a whole plan per hint (a brief of a
    few hundred hinted shots would otherwise plan itself a few hundred times over).
    """
    if opts.seconds is not None or brief.seconds is not None:
        # Every plan for a target of T seconds covers T seconds of output: it bills T or more.
        return result.billed_seconds > 2 * result.seconds
    # Without a target the plan without the hint still covers every other shot's length.
    if seg.seconds is not None and result.billed_seconds <= 2 * (result.seconds - seg.seconds):
        return False
    if result.crossfade_frames:
        return True  # overlaps are shared out by position: any shot's length may move
    # Without a target a shot's length is its own: without the hint the other shots bill
    # what they bill now, so only a shot billing over half the total can halve it.
    mine = sum(s.billed_seconds for s in result.shots if seg.start <= s.source[0] <= seg.end)
    return 2 * mine > result.billed_seconds


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
