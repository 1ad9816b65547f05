"""Which cast members a shot shows, and which of their pictures go to the model. Pure.

* A shot shows the members it lists (``Cast: Maya`` or YAML ``cast: [Maya]``), in that
  order; a shot that lists none shows every member its text names: the name, in any case,
  as a whole word (``Maya's`` names Maya, ``Mayan`` does not; names written in Chinese,
  Japanese or Korean match anywhere, as those scripts put no spaces between words), in the
  order of first mention.
* Every member shown gets its description in the prompt, on every model.
* Pictures go to models that take reference images, as far as the capability table allows:
  round robin over the members (each one's first picture, then each one's second ...) up
  to ``max_references``, so a cap drops the extra views of a member before it drops a
  member. Where the model cannot take them for this call (none at all, not beside a
  first or last frame, only beside one, not at this duration), none are sent, and
  :attr:`Choice.note` says why, for the plan to show.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .brief import CastMember, Segment
from .capabilities import Capabilities

_CJK = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
                  "\uac00-\ud7af\uf900-\ufaff]")


def mentioned(text: str, name: str) -> int | None:
    """Where ``text`` first names ``name`` (any case, whole words), or None."""
    words = r"\s+".join(re.escape(w) for w in name.split())
    pattern = words if _CJK.search(name) else rf"(?<!\w){words}(?!\w)"
    m = re.search(pattern, text, re.IGNORECASE)
    return m.start() if m else None


def members_in(segment: Segment, cast: Sequence[CastMember]) -> tuple[CastMember, ...]:
    """The members ``segment`` shows: the ones it lists, else the ones it names."""
    if segment.cast is not None:
        by_name = {m.name: m for m in cast}
        return tuple(by_name[name] for name in segment.cast)
    text = " ".join(filter(None, (segment.context, segment.prompt)))
    found = [(at, i, m) for i, m in enumerate(cast) if (at := mentioned(text, m.name)) is not None]
    return tuple(m for _, _, m in sorted(found, key=lambda f: (f[0], f[1])))


def describe(prompt: str, members: Sequence[CastMember]) -> str:
    """``prompt`` followed by each member's description: ``... Maya: a woman in ...``."""
    for member in members:
        prompt = f"{full_stop(prompt)} {member.name}: {member.description}"
    return full_stop(prompt) if members else prompt


def full_stop(text: str) -> str:
    """``text`` ending as a sentence does (a stop added only where none is)."""
    return text if text.endswith((".", "!", "?", "。", "！", "？", "…", "؟")) else f"{text}."


@dataclass(frozen=True)
class Choice:
    """The pictures one call sends, as (member, source) pairs, and why any were held back."""

    references: tuple[tuple[str, str], ...]
    note: str | None = None


def choose(members: Sequence[CastMember], caps: Capabilities, *, seconds: int,
           first_frame: bool, last_frame: bool,
           digest: Mapping[str, str] | None = None) -> Choice:
    """The reference images one call of ``seconds`` sends for ``members`` on ``caps``.

    ``digest`` maps a source to the hash of its bytes, so a picture two members share (or
    one written twice) is sent once.
    """
    rounds = max((len(m.images) for m in members), default=0)
    queue = [(m.name, m.images[n]) for n in range(rounds) for m in members if n < len(m.images)]
    seen: set[str] = set()
    wanted = []
    for name, source in queue:
        key = (digest or {}).get(source, source)
        if key not in seen:
            seen.add(key)
            wanted.append((name, source))
    if not wanted:
        return Choice(())
    why = refusal(caps, seconds, first_frame, last_frame)
    if why is not None:
        return Choice((), f"description only: {caps.model} {why}")
    sent = tuple(wanted[: caps.max_references])
    if len(sent) == len(wanted):
        return Choice(sent)
    left_out = [m.name for m in members if m.images and m.name not in {n for n, _ in sent}]
    if left_out:
        note = (f"{', '.join(left_out)}: description only; {caps.model} takes at most "
                f"{caps.max_references} reference image(s) a call")
    else:
        note = (f"{len(sent)} of {len(wanted)} reference images sent; {caps.model} takes at "
                f"most {caps.max_references} a call")
    return Choice(sent, note)


def refusal(caps: Capabilities, seconds: int, first_frame: bool, last_frame: bool) -> str | None:
    """Why ``caps`` takes no reference images on this call, or None if it does."""
    if not caps.takes("reference"):
        return "takes no reference images"
    if caps.reference_mode == "alone" and (first_frame or last_frame):
        return "takes reference images only without a first or last frame"
    if caps.reference_mode == "with_first_frame" and not first_frame:
        return "takes reference images only with a first frame; give this shot one to send them"
    if caps.reference_durations and seconds not in caps.reference_durations:
        allowed = ", ".join(f"{d} s" for d in caps.reference_durations)
        return f"takes reference images only on {allowed} calls; this call is {seconds} s"
    return None
