"""Parsing briefs: the shot boundaries people actually write, in any language.

A brief becomes an ordered list of :class:`Segment`, one per shot the writer meant, each
with the character span (Unicode code points, ``[start, end)``) it came from. Markup is
recognised and removed from the prompt: shot labels (``Shot 3:``, ``3.``, ``- ``), scene
headings, transitions, Markdown headings and rules, timecodes and duration hints. The
``Style:`` preamble (or YAML ``style``) is kept apart and added to every prompt by the
planner; it is never a shot of its own.

Two modes, chosen by what the text contains:

* marker mode: the brief uses shot markers; a shot runs from one marker to the next,
  blank lines inside it are just formatting;
* paragraph mode: no markers; each paragraph (blank-line separated) is a shot, and a
  single block of prose is one shot that the planner may split at sentence ends.

Structured briefs (YAML or JSON with a ``shots`` list) are validated with a schema.
Pure: no I/O; reading files is the caller's job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BriefError

_SHOT_WORDS = (
    "shot|scene|take|plano|escena|toma|sc[eè]ne|plan|szene|einstellung|cena|inquadratura|"
    "scena|кадр|сцена|镜头|鏡頭|场景|場景|分镜|カット|シーン|샷|장면|컷"
)
_NUM = r"[0-9０-９]{1,3}"
_SEP = r"[:：.．\-–—)）、]"
SHOT_LABEL = re.compile(
    rf"^\s*(?:\*\*)?(?:{_SHOT_WORDS})\s*(?:#\s*)?{_NUM}(?:\*\*)?\s*{_SEP}?(?:\*\*)?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
NUMBERED = re.compile(rf"^\s*{_NUM}\s*(?:[.)]\s+|[．）、]\s*)(?P<rest>.*)$")
BULLET = re.compile(r"^(?P<indent>\s*)[-*•‣]\s+(?P<rest>.*)$")
SCENE_HEADING = re.compile(r"^\s*(?P<kind>INT\./EXT\.|EXT\./INT\.|I/E\.?|INT\.|EXT\.)\s*(?P<rest>.*)$")
TRANSITION = re.compile(
    r"^\s*(?:(?:SMASH |MATCH |JUMP )?CUT TO:|DISSOLVE TO:|WIPE TO:|FADE IN:|FADE OUT\.?|"
    r"FADE TO BLACK\.?|CUT TO BLACK\.?)\s*$"
)
MD_HEADING = re.compile(r"^\s{0,3}(?P<hashes>#{1,6})\s+(?P<rest>.*?)\s*#*\s*$")
MD_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_TC = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?"
TIMECODE = re.compile(
    rf"^\s*[\[(]?\s*(?P<a>{_TC})\s*(?:-|–|—|to|→)\s*(?P<b>{_TC})\s*[\])]?\s*[:\-–—]?\s*(?P<rest>.*)$"
)
STYLE = re.compile(
    r"^\s*(?:style|look|visual style|estilo|stil|style visuel|风格|風格|スタイル)\s*[:：]\s*(?P<rest>.+)$",
    re.IGNORECASE,
)
TITLE = re.compile(r"^\s*(?:title|titel|título|titre|标题|タイトル)\s*[:：]\s*(?P<rest>.+)$", re.IGNORECASE)
_UNIT = r"(?:s|sec|secs|second|seconds|seg|segundos|sek|sekunden|秒)"
HINT_PAREN = re.compile(rf"\s*[(\[]\s*(?P<n>\d+(?:[.,]\d+)?)\s*{_UNIT}\.?\s*[)\]]", re.IGNORECASE)
HINT_TAIL = re.compile(rf"\s*(?:—|–|--|-)\s*(?P<n>\d+(?:[.,]\d+)?)\s*{_UNIT}\.?\s*$", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])")

Span = tuple[int, int]


@dataclass(frozen=True)
class Segment:
    """One shot as written: its prompt (markup removed) and where it came from."""

    prompt: str
    start: int
    end: int
    seconds: float | None = None
    parts: tuple[Span, ...] = field(default=(), compare=False)
    context: str = ""  # a scene heading's setting, repeated on every piece of a split

    def sentences(self, text: str) -> list[tuple[str, Span]]:
        """The segment's sentences with their spans in ``text`` (used to split long shots)."""
        out: list[tuple[str, Span]] = []
        for start, end in self.parts or ((self.start, self.end),):
            pos = start
            chunk = text[start:end]
            for m in SENTENCE_END.finditer(chunk):
                if m.start() > pos - start:
                    out.append((chunk[pos - start : m.start()], (pos, start + m.start())))
                pos = start + m.end()
            if pos < end and chunk[pos - start :].strip():
                out.append((chunk[pos - start :], (pos, end)))
        return [(clean_prompt(s)[0], span) for s, span in out if clean_prompt(s)[0]]


@dataclass(frozen=True)
class Brief:
    """A parsed brief: segments plus the settings the brief itself carries."""

    text: str
    segments: tuple[Segment, ...]
    style: str | None = None
    title: str | None = None
    seconds: float | None = None
    audio: bool | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    form: str = "prose"


class _StructuredShot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    seconds: float | None = Field(None, gt=0)


class _Structured(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = None
    style: str | None = None
    seconds: float | None = Field(None, gt=0)
    audio: bool | None = None
    model: str | None = None
    size: str | None = None
    fps: int | None = Field(None, gt=0)
    seed: int | None = None
    shots: list[_StructuredShot] = Field(min_length=1)


def clean_prompt(text: str) -> tuple[str, float | None]:
    """Collapse whitespace and strip duration hints; returns (prompt, hinted seconds)."""
    seconds: float | None = None
    for pattern in (HINT_PAREN, HINT_TAIL):
        m = pattern.search(text)
        if m:
            seconds = float(m.group("n").replace(",", "."))
            text = text[: m.start()] + text[m.end() :]
    text = re.sub(r"\*\*|__", "", text)
    return " ".join(text.split()).strip(" \t-–—:"), seconds


def _tc_seconds(tc: str) -> float:
    parts = tc.replace(",", ".").split(":")
    total = 0.0
    for p in parts:
        total = total * 60 + float(p)
    return total


def _scene_phrase(kind: str, rest: str) -> str:
    """``EXT. HARBOR - DAWN`` -> ``Exterior, harbor, dawn.``: setting words, not markup."""
    where = {"INT.": "Interior", "EXT.": "Exterior"}.get(kind.upper(), "Interior and exterior")
    bits = [b.strip().lower() for b in re.split(r"\s+[-–—]\s+|\s*/\s*", rest) if b.strip()]
    return ", ".join([where, *bits]) + "."


# --- structured ---------------------------------------------------------------------


def _looks_structured(text: str) -> bool:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return True
    return bool(re.search(r"^shots\s*:", text, re.MULTILINE))


def _structured_spans(text: str, count: int) -> list[Span]:
    """Spans of each item of ``shots`` from the YAML node marks (code point offsets)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return [(0, len(text))] * count
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "shots" and isinstance(value, yaml.SequenceNode):
                spans = [(n.start_mark.index, n.end_mark.index) for n in value.value]
                return [(a, len(text[:b].rstrip()) if b > a else b) for a, b in spans]
    return [(0, len(text))] * count


def _parse_structured(text: str) -> Brief:
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise BriefError(f"the brief looks structured but is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BriefError("a structured brief must be a mapping with a 'shots' list")
    try:
        parsed = _Structured.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise BriefError(
            f"structured brief: {problems}. Allowed keys: title, style, seconds, audio, model, "
            "size, fps, seed, shots: [{prompt, seconds?}]"
        ) from None
    spans = _structured_spans(text, len(parsed.shots))
    segments = []
    for shot, (start, end) in zip(parsed.shots, spans, strict=True):
        prompt, hint = clean_prompt(shot.prompt)
        if not prompt:
            raise BriefError(f"structured brief: shot at {start} has an empty prompt")
        segments.append(Segment(prompt, start, end, shot.seconds or hint))
    extra = {k: v for k in ("model", "size", "fps", "seed") if (v := getattr(parsed, k)) is not None}
    return Brief(
        text, tuple(segments), parsed.style, parsed.title, parsed.seconds, parsed.audio, extra,
        "structured",
    )


# --- free text ----------------------------------------------------------------------


@dataclass
class _Open:
    """A shot being collected line by line."""

    start: int
    label: str = ""
    seconds: float | None = None
    parts: list[Span] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    depth: int = 0  # Markdown heading level that opened it, 0 otherwise

    def add(self, text: str, start: int) -> None:
        if text.strip():
            self.lines.append(text)
            self.parts.append((start, start + len(text)))


def _lines(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for line in text.splitlines(keepends=True):
        out.append((pos, line.rstrip("\r\n")))
        pos += len(line)
    return out


def _marker(line: str) -> tuple[str, re.Match[str]] | None:
    """Which kind of shot marker opens ``line``, if any (order matters: rules before bullets)."""
    for kind, pattern in (
        ("rule", MD_RULE),
        ("transition", TRANSITION),
        ("heading", MD_HEADING),
        ("timecode", TIMECODE),
        ("scene", SCENE_HEADING),
        ("label", SHOT_LABEL),
        ("numbered", NUMBERED),
        ("bullet", BULLET),
    ):
        m = pattern.match(line)
        if m:
            return kind, m
    return None


def _finish(shot: _Open | None, text: str, out: list[Segment]) -> None:
    if shot is None:
        return
    body = " ".join(line.strip() for line in shot.lines)
    prompt, hint = clean_prompt(body)
    label_prompt, label_hint = clean_prompt(shot.label)
    if shot.label and shot.depth == 0:
        prompt = f"{label_prompt} {prompt}".strip()
    elif not prompt:  # a heading with no body is itself the shot's description
        prompt = label_prompt
        if label_prompt:
            shot.parts.append((shot.start, shot.start + len(text[shot.start :].split("\n")[0])))
    if not prompt:
        return
    end = shot.parts[-1][1] if shot.parts else shot.start
    seconds = shot.seconds if shot.seconds is not None else (hint or label_hint)
    context = label_prompt if shot.label and shot.depth == 0 else ""
    out.append(Segment(prompt, shot.start, end, seconds, tuple(shot.parts), context))


def _preamble(line: str, seen_shot: bool, meta: dict[str, str]) -> bool:
    """Consume ``Style:``/``Title:`` lines written before the first shot."""
    if seen_shot:
        return False
    for key, pattern in (("style", STYLE), ("title", TITLE)):
        m = pattern.match(line)
        if m:
            meta[key] = " ".join(m.group("rest").split())
            return True
    return False


def _open_for(kind: str, m: re.Match[str], offset: int, line: str) -> _Open:
    """A new shot for a marker line; the marker itself is markup, the rest is content."""
    rest = m.group("rest") if "rest" in m.groupdict() else ""
    rest_at = offset + (m.start("rest") if "rest" in m.groupdict() else len(line))
    shot = _Open(start=offset)
    if kind == "timecode":
        a, b = _tc_seconds(m.group("a")), _tc_seconds(m.group("b"))
        if b <= a:
            raise BriefError(
                f"timecode {m.group('a')}-{m.group('b')} at character {offset} ends before "
                "it starts; write [start-end] with end after start"
            )
        shot.seconds = b - a
    if kind == "scene":
        shot.label = _scene_phrase(m.group("kind"), rest)
    elif kind == "heading":
        shot.depth = len(m.group("hashes"))
        inner = SHOT_LABEL.match(rest)
        shot.label = inner.group("rest") if inner else rest
    else:
        shot.add(rest, rest_at)
    return shot


def _parse_markers(text: str) -> tuple[list[Segment], dict[str, str]]:
    out: list[Segment] = []
    meta: dict[str, str] = {}
    shot: _Open | None = None
    for offset, line in _lines(text):
        if _preamble(line, bool(out) or shot is not None, meta):
            continue
        found = _marker(line)
        nested = bool(found and found[0] == "bullet" and shot and found[1].group("indent"))
        if found is None or nested:
            if line.strip():
                if shot is None:  # prose after a transition or rule starts a shot
                    shot = _Open(start=offset + len(line) - len(line.lstrip()))
                shot.add(line, offset)
            continue
        kind, m = found
        # A heading directly followed by a deeper heading is a title, not a shot.
        if shot is not None and shot.depth and not shot.lines and kind == "heading":
            if len(m.group("hashes")) > shot.depth:
                shot = None
        _finish(shot, text, out)
        shot = None if kind in ("rule", "transition") else _open_for(kind, m, offset, line)
    _finish(shot, text, out)
    return out, meta


def _parse_paragraphs(text: str) -> tuple[list[Segment], dict[str, str]]:
    out: list[Segment] = []
    meta: dict[str, str] = {}
    shot: _Open | None = None
    for offset, line in _lines(text):
        if _preamble(line, bool(out) or shot is not None, meta):
            continue
        if not line.strip():
            _finish(shot, text, out)
            shot = None
            continue
        if shot is None:
            shot = _Open(start=offset + len(line) - len(line.lstrip()))
        shot.add(line, offset)
    _finish(shot, text, out)
    return out, meta


def parse_brief(text: str) -> Brief:
    """Parse a brief in any of the supported forms; raises BriefError if it has no shot."""
    if "\x00" in text:
        raise BriefError("the brief contains NUL bytes; it must be UTF-8 text")
    if not text.strip():
        raise BriefError("the brief is empty: write at least one sentence describing a shot")
    if _looks_structured(text):
        return _parse_structured(text)
    has_markers = any(_marker(line) is not None for _, line in _lines(text))
    segments, meta = (_parse_markers if has_markers else _parse_paragraphs)(text)
    if not segments:
        raise BriefError(
            "the brief has no shot text: after the Style/Title lines and markup "
            "(headings, timecodes, transitions) nothing is left to film"
        )
    form = "shots" if has_markers else ("paragraphs" if len(segments) > 1 else "prose")
    return Brief(text, tuple(segments), meta.get("style"), meta.get("title"), form=form)
