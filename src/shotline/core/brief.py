"""Parsing briefs: the shot boundaries people actually write, in any language.

A brief becomes an ordered list of :class:`Segment`, one per shot the writer meant, each
with the character span (Unicode code points, ``[start, end)``) it came from. Markup is
recognised and removed from the prompt: shot labels (``Shot 3:``, ``3.``, ``- ``), scene
headings, transitions, Markdown headings and rules, timecodes and duration hints.

The preamble is never a shot: ``Style:`` lines (in many languages, anywhere in the brief)
or YAML ``style`` are kept apart and added to every prompt by the planner; ``Title:``
lines and a title line at the top (a short line without sentence punctuation, before the
shots) become the brief's title.

Duration hints are read only where they cannot be something else (see :func:`_hint_at`):

* a timecode (``[00:04-00:12]``) or a YAML ``seconds`` field;
* a hint standing alone at a shot's start (``(5 s) A gull dives``, ``Shot 1 (5 s):``) or
  end (``A gull dives. (5 s)``, a hint on its own line), or closing the shot's last
  sentence (``A gull dives (5 s).``, ``A gull dives — 6 seconds``);
* never inside dialogue (quotes, or the lines under a screenplay character cue), never
  after a name in capitals (``MAYA (30s)`` is an age), never a year (``(1950s)``), and a
  bare ``30s``/``60s`` written against the words before it is a decade or an age, not a
  duration: it counts only standing alone.

Every hint read is kept as written (:attr:`Segment.hint`), so the plan can show it.

Two modes, chosen by what the text contains:

* marker mode: the brief uses shot markers; a shot runs from one marker to the next,
  blank lines inside it are just formatting;
* paragraph mode: no markers; each paragraph (blank-line separated) is a shot, and a
  single block of prose is one shot that the planner may split at sentence ends.

A cast (named characters, products and places, each with a description and optional
reference images) is a ``cast:`` mapping in YAML/JSON, or a ``Cast:`` block in text and
Markdown: the header alone on its line (``Cast:``, ``## Cast``, ``**Cast:**``), then one
member per line, ``- Name: description``, with ``(kind)`` after the name if wanted and
pictures as ``Images: a.png, https://...`` at the end of the line (or on an indented line
under it) or as Markdown images ``![](a.png)``. The block ends at the first blank line after
its members. A shot may start from an image and end on one: a line ``First frame: a.png``
or ``Last frame: b.png`` inside the shot, or the same words in parentheses in its text
(``(first frame: a.png)``); ``Cast: Maya, Leo`` inside a shot names its members instead of
the names its text mentions. A shot marked as continuing the one before (YAML/JSON
``continues: true``; in text ``(continues)`` or ``(continuous)`` in its label or text, as in
``Shot 3 (continues): ...``, or a scene heading ending ``- CONTINUOUS``, the screenwriter's
word for no time passing between scenes) starts from the last frame of the shot before it,
where the model takes a first frame (see the planner); shot 1 cannot continue anything, and
a continuation cannot also start from an image of its own. These are never part of a
prompt. Images are kept as written (:attr:`CastMember.images`,
:attr:`Segment.first_frame`): reading them, and hashing their bytes into
:attr:`Brief.images`, is the library's job.

Structured briefs (YAML or JSON with a ``shots`` list) are validated with a schema.
Pure: no I/O; reading files is the caller's job.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BriefError
from .inputs import load_json, load_yaml

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
    rf"^\s*(?P<tc>[\[(]?\s*(?P<a>{_TC})\s*(?:-|–|—|to|→)\s*(?P<b>{_TC})\s*[\])]?)"
    r"\s*[:\-–—]?\s*(?P<rest>.*)$"
)
# "Style" as people write it in the languages the README invites (Markdown bold allowed).
_STYLE_WORDS = (
    "style|look|visual style|art style|estilo|estilo visual|estética|stil|stijl|"
    "style visuel|stile|stile visivo|styl|стиль|визуальный стиль|στυλ|στιλ|ύφος|"
    "أسلوب|الأسلوب|نمط|النمط|סגנון|风格|風格|画风|畫風|视觉风格|視覺風格|スタイル|画風|스타일"
)
_TITLE_WORDS = (
    "title|titel|título|titulo|titre|titolo|tytuł|название|заголовок|τίτλος|العنوان|عنوان|"
    "כותרת|标题|標題|题目|題目|片名|タイトル|제목"
)
_B = r"(?:\*\*|__|\*|_)?"
STYLE = re.compile(
    rf"^\s*(?:[-*•]\s+)?{_B}(?:{_STYLE_WORDS}){_B}\s*[:：]\s*{_B}\s*(?P<rest>.+?)\s*{_B}\s*$",
    re.IGNORECASE,
)
TITLE = re.compile(
    rf"^\s*(?:[-*•]\s+)?{_B}(?:{_TITLE_WORDS}){_B}\s*[:：]\s*{_B}\s*(?P<rest>.+?)\s*{_B}\s*$",
    re.IGNORECASE,
)

# --- cast and image inputs ---------------------------------------------------------------
_CAST_WORDS = (
    "cast|characters|cast and places|reparto|personajes|elenco|besetzung|figuren|personnages|"
    "distribution|personaggi|obsada|postacie|персонажи|актёры|χαρακτήρες|الشخصيات|דמויות|"
    "角色|人物|登場人物|キャスト|등장인물|캐스트"
)
CAST_HEADER = re.compile(
    rf"^\s*(?:#{{1,6}}\s+)?{_B}(?:{_CAST_WORDS}){_B}\s*[:：]?\s*{_B}\s*$", re.IGNORECASE)
CAST_ENTRY = re.compile(
    r"^(?P<indent>\s*)(?:[-*•]\s+|\d{1,2}[.)]\s+)?(?P<name>[^\W_][^:：()\[\]]{0,59}?)\s*"
    r"(?:\((?P<kind>[^()]{1,30})\))?\s*(?:[:：]|\s[—–-]\s)\s*(?P<desc>.*)$")
CAST_IMAGES = re.compile(
    r"(?:^|[\s(\[,;.])[(\[]?\s*(?:images?|refs?|references?|pictures?|photos?)\s*[:：]\s*"
    r"(?P<list>[^)\]]*?)\s*[)\]]?\s*\.?\s*$", re.IGNORECASE)
MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*(?P<src><[^>]+>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_FIRST_WORDS = "first frame|start frame|starting frame|opening frame|first image|start image"
_LAST_WORDS = "last frame|end frame|ending frame|closing frame|last image|end image"
_DIRECTIVE = rf"(?P<key>{_FIRST_WORDS}|{_LAST_WORDS}|cast)"
DIRECTIVE_LINE = re.compile(
    rf"^\s*(?:[-*•]\s+)?{_B}{_DIRECTIVE}{_B}\s*[:：]\s*{_B}\s*(?P<value>\S.*?)\s*{_B}\s*$",
    re.IGNORECASE)
DIRECTIVE_INLINE = re.compile(rf"\s*[(\[]\s*{_DIRECTIVE}\s*[:：]\s*(?P<value>[^)\]]+?)\s*[)\]]",
                              re.IGNORECASE)
# "(continues)" marks a shot as continuing the one before. Not "(CONT'D)": in a screenplay
# that follows a character cue and means the same character goes on speaking.
CONTINUES_INLINE = re.compile(r"\s*[(\[]\s*(?:continues|continuous|continuing)\s*[)\]]",
                              re.IGNORECASE)
SCENE_CONTINUOUS = re.compile(r"\s*[-–—]\s*continuous\s*$", re.IGNORECASE)
MAX_NAME_WORDS = 6

# --- duration hints -------------------------------------------------------------------
_UNIT = (
    r"(?:seconds|second|secs|sec|segundos|segundo|segs|seg|secondes|seconde|secondi|"
    r"sekunden|sekunde|sek|s|秒間|秒|초|секунды|секунд|секунда|сек|с|δευτερόλεπτα|δευτ|"
    r"ثوانٍ|ثواني|ثوان|ثانية|שניות|שנ׳)"
)
_CORE = rf"(?P<n>\d{{1,4}}(?:[.,]\d+)?)(?P<gap>\s*)(?P<unit>{_UNIT})\.?(?!\w)"
_OPEN, _CLOSE = r"[(\[（【]", r"[)\]）】]"
HINT_START = re.compile(
    rf"^(?P<hint>\s*(?P<open>{_OPEN})?\s*{_CORE}\s*(?(open){_CLOSE}|[:：\-–—]))\s*", re.IGNORECASE
)
HINT_END = re.compile(
    rf"(?P<hint>(?:\s*(?P<open>{_OPEN})|\s+-{{1,2}}|\s*[—–])\s*{_CORE}\s*(?(open){_CLOSE}))"
    r"(?P<post>\s*[.!?。！？]?)\s*$",
    re.IGNORECASE,
)
_SENTENCE_STOP = ".!?…。！？؟۔׃\"'”’»」』)"
_CAPS_NAME = re.compile(r"(?:^|\s)(?:[^\W\d_]*[A-ZÀ-ÖØ-ÞА-ЯΑ-Ω]){2,}[^\W\d_]*[.'’]?$")
_QUOTES = (('"', '"'), ("“", "”"), ("«", "»"), ("„", "“"), ("「", "」"), ("『", "』"))

# --- dialogue -------------------------------------------------------------------------
# A screenplay character cue: a name in capitals on its own line, maybe with an extension
# or an age in parentheses (``MAYA (V.O.)``, ``MAYA (30s)``). The lines under it, up to a
# blank line, are what the character says.
CUE = re.compile(r"^\s*(?=[^a-z]*[A-Z])[A-Z][A-Z0-9 .'’\-]{0,30}(?:\s*\([^)]{1,20}\))?\s*$")
INLINE_DIALOGUE = re.compile(r"^\s*[A-Z][A-Z .'’\-]{1,30}(?:\s*\([^)]{1,20}\))?\s*:\s+\S")

# --- sentences ------------------------------------------------------------------------
SENTENCE_END = re.compile(r"(?<=[.!?…؟۔׃])[\"'”’»)\]]*\s+|(?<=[。！？])[」』”）]*")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr prof vs etc no fig approx sra sr dra srta hr fr nr".split()
)

Span = tuple[int, int]
HintKind = Literal["text", "timecode", "field"]


@dataclass(frozen=True)
class Segment:
    """One shot as written: its prompt (markup removed) and where it came from.

    ``seconds`` is the duration the brief gives the shot, if any, and ``hint`` the text it
    was read from, exactly as written (``(5 s)``, ``[00:04-00:12]``, ``seconds: 8``);
    ``hint_kind`` says which kind: a hint in the text, a timecode or a YAML field.
    """

    prompt: str
    start: int
    end: int
    seconds: float | None = None
    parts: tuple[Span, ...] = field(default=(), compare=False)
    context: str = ""  # a scene heading's setting, repeated on every piece of a split
    hint: str | None = None
    hint_kind: HintKind | None = None
    cast: tuple[str, ...] | None = None  # the members the shot lists; None: those it names
    first_frame: str | None = None  # an image the shot starts from, as written (path or URL)
    last_frame: str | None = None  # an image the shot ends on
    continues: bool = False  # starts from the last frame of the shot before

    def sentences(self, text: str) -> list[tuple[str, Span]]:
        """The segment's sentences with their spans in ``text`` (used to split long shots).

        A sentence ends at ``.!?…`` (and ``؟ ۔ ׃``) followed by a space, or at ``。！？``;
        not after a common abbreviation (``Dr.``) or an initial (``J.``).
        """
        out: list[tuple[str, Span]] = []
        for start, end in self.parts or ((self.start, self.end),):
            chunk = text[start:end]
            pos = 0
            for m in SENTENCE_END.finditer(chunk):
                if m.start() <= pos or _abbreviation(chunk[pos : m.start()]):
                    continue
                out.append((chunk[pos : m.start()], (start + pos, start + m.start())))
                pos = m.end()
            if chunk[pos:].strip():
                out.append((chunk[pos:], (start + pos, end)))
        return [(clean_prompt(s), span) for s, span in out if clean_prompt(s)]


def _abbreviation(sentence: str) -> bool:
    """Whether the stop closing ``sentence`` belongs to an abbreviation or an initial."""
    words = sentence.rstrip("\"'”’»)] ").split()
    if not words or not words[-1].endswith("."):
        return False
    last = words[-1][:-1]
    return last.lower() in _ABBREVIATIONS or (len(last) == 1 and last.isupper())


@dataclass(frozen=True)
class CastMember:
    """A named character, product or place: what it looks like, and pictures of it.

    ``images`` are paths or URLs as the brief wrote them; ``kind`` is a free word
    (character, product, place) shown in the plan.
    """

    name: str
    description: str
    images: tuple[str, ...] = ()
    kind: str | None = None


class ImageRef(BaseModel):
    """An input image once read: the hash of its bytes (what shot keys cover), its type and
    size. The library reads the bytes; the core only ever sees this."""

    model_config = ConfigDict(frozen=True)

    sha256: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    mime: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    bytes: int = Field(gt=0)


@dataclass(frozen=True)
class Brief:
    """A parsed brief: segments plus the settings the brief itself carries.

    ``images`` maps every image the brief names (cast pictures, first and last frames, as
    written) to what was read there, and ``image_data`` holds their bytes by hash, for the
    render to send; both are empty until the library reads them.
    """

    text: str
    segments: tuple[Segment, ...]
    style: str | None = None
    title: str | None = None
    seconds: float | None = None
    audio: bool | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    form: str = "prose"
    cast: tuple[CastMember, ...] = ()
    images: Mapping[str, ImageRef] = field(default_factory=dict)
    image_data: Mapping[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def image_sources(self) -> list[str]:
        """Every image the brief names, as written, once each, in the order it names them."""
        found = [src for member in self.cast for src in member.images]
        found += [src for seg in self.segments for src in (seg.first_frame, seg.last_frame) if src]
        return list(dict.fromkeys(found))


class _StructuredShot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)
    seconds: float | None = Field(None, gt=0)
    cast: list[str] | None = None
    first_frame: str | None = Field(None, min_length=1)
    last_frame: str | None = Field(None, min_length=1)
    continues: bool = False


class _StructuredMember(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(min_length=1)
    images: list[str] | str = Field(default_factory=list)
    kind: str | None = None


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
    cast: dict[str, _StructuredMember | str] = Field(default_factory=dict)
    shots: list[_StructuredShot] = Field(min_length=1)


def clean_prompt(text: str) -> str:
    """Collapse whitespace and drop Markdown emphasis and stray leading/trailing markup."""
    text = re.sub(r"\*\*|__", "", text)
    return " ".join(text.split()).strip(" \t-–—:")


# --- duration hints -------------------------------------------------------------------


@dataclass(frozen=True)
class _Hint:
    seconds: float
    text: str  # as written, e.g. "(5 s)"
    span: Span  # within the string searched


def _hint_seconds(m: re.Match[str], standalone: bool) -> float | None:
    """The seconds of a matched hint, or None where the number is not a duration."""
    raw = m.group("n")
    value = float(raw.replace(",", "."))
    if value <= 0 or (raw.isdigit() and len(raw) == 4):  # 0 s, or a year: (1950s)
        return None
    # "30s" against the words before it is a decade or an age ("in her 30s", "(60s)");
    # it counts as a duration only standing alone. "30 s" or "30 sec" is unambiguous.
    decade = raw.isdigit() and value % 10 == 0 and not m.group("gap") and m.group("unit") in "sс"
    if decade and not standalone:
        return None
    return value


def _inside_quotes(before: str) -> bool:
    return any(before.count(a) > before.count(b) if a != b else before.count(a) % 2 == 1
               for a, b in _QUOTES)


def _hint_at(text: str, where: Literal["start", "end"]) -> _Hint | None:
    """A duration hint at the start or at the end of ``text``, if one is unambiguous there."""
    if where == "start":
        m = HINT_START.match(text)
        if m is None:
            return None
        value = _hint_seconds(m, standalone=True)
        written = m.group("hint").strip().rstrip(":：-–—").strip()
        return _Hint(value, written, m.span("hint")) if value else None
    m = HINT_END.search(text)
    if m is None:
        return None
    before = text[: m.start("hint")].rstrip()
    standalone = not before or before[-1] in _SENTENCE_STOP
    if _inside_quotes(before):
        return None  # dialogue: "Give me ten seconds (10 s)" is a line, not a duration
    if not standalone and _CAPS_NAME.search(before):
        return None  # MAYA (30s): a character and an age
    value = _hint_seconds(m, standalone)
    if value is None:
        return None
    return _Hint(value, m.group("hint").strip(), (m.start("hint"), m.start("post")))


def _cut(parts: list[Span], at: Span) -> list[Span]:
    """``parts`` without the characters of ``at`` (a hint removed from the prompt)."""
    out: list[Span] = []
    for a, b in parts:
        if b <= at[0] or a >= at[1]:
            out.append((a, b))
            continue
        out += [(x, y) for x, y in ((a, at[0]), (at[1], b)) if y > x]
    return out


def _join(text: str, parts: list[Span]) -> str:
    """The text of ``parts``, a space between lines (none before the stop a hint preceded)."""
    out = ""
    for a, b in parts:
        piece = text[a:b].strip()
        out += piece if not out or piece[:1] in ".!?。！？,;" else " " + piece
    return out


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
        # Nesting is bounded while reading (inputs.MAX_NESTING): no parser recurses into it.
        data = load_json(text) if text.lstrip().startswith("{") else load_yaml(text)
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
            "size, fps, seed, cast: {NAME: description, or {description, images?, kind?}}, "
            "shots: [{prompt, seconds?, cast?, first_frame?, last_frame?, continues?}]"
        ) from None
    spans = _structured_spans(text, len(parsed.shots))
    segments = []
    for shot, (start, end) in zip(parsed.shots, spans, strict=True):
        inputs: dict[str, Any] = {"cast": None if shot.cast is None else tuple(shot.cast),
                  "first_frame": shot.first_frame, "last_frame": shot.last_frame,
                  "continues": shot.continues}
        prompt_text = shot.prompt
        hint = _hint_at(prompt_text, "end") or _hint_at(prompt_text, "start")
        if hint is not None:
            prompt_text = _join(prompt_text, [(0, hint.span[0]), (hint.span[1], len(prompt_text))])
        prompt = clean_prompt(prompt_text)
        if not prompt:
            raise BriefError(f"structured brief: shot at {start} has an empty prompt")
        if shot.seconds is not None:
            segments.append(Segment(prompt, start, end, shot.seconds, hint=f"seconds: {shot.seconds:g}",
                                    hint_kind="field", **inputs))
        elif hint is not None:
            segments.append(Segment(prompt, start, end, hint.seconds, hint=hint.text,
                                    hint_kind="text", **inputs))
        else:
            segments.append(Segment(prompt, start, end, **inputs))
    extra = {k: v for k in ("model", "size", "fps", "seed") if (v := getattr(parsed, k)) is not None}
    cast = []
    for name, member in parsed.cast.items():
        if isinstance(member, str):
            cast.append(CastMember(name.strip(), member.strip()))
        else:
            images = [member.images] if isinstance(member.images, str) else member.images
            cast.append(CastMember(name.strip(), member.description.strip(),
                                   tuple(i.strip() for i in images), member.kind))
    return _with_cast(Brief(
        text, tuple(_check_continues(segments)), parsed.style, parsed.title, parsed.seconds,
        parsed.audio, extra, "structured",
    ), cast)


def _check_continues(segments: list[Segment]) -> list[Segment]:
    """Refuse a continuation with nothing to continue, or with a first frame of its own."""
    for k, seg in enumerate(segments):
        if not seg.continues:
            continue
        if k == 0:
            raise BriefError("shot 1 is marked as continuing the shot before, but it is the "
                             "first shot: drop the mark (continues / CONTINUOUS)")
        if seg.first_frame is not None:
            raise BriefError(f"shot {k + 1} continues the shot before, so it starts from that "
                             f"shot's last frame; it cannot also start from {seg.first_frame}: "
                             "drop one of the two")
    return segments


# --- cast -----------------------------------------------------------------------------


def _with_cast(brief: Brief, members: list[CastMember]) -> Brief:
    """``brief`` with its cast, checked: names unique (any case), descriptions given, every
    listed name a member (spelled as the cast spells it), image sources not empty."""
    by_name: dict[str, CastMember] = {}
    for member in members:
        where = f"cast member {member.name!r}"
        if not member.name or len(member.name.split()) > MAX_NAME_WORDS:
            raise BriefError(f"{where}: a name is 1 to {MAX_NAME_WORDS} words")
        if member.name.casefold() in by_name:
            raise BriefError(f"{where} is defined twice (names are matched in any case)")
        if not member.description:
            raise BriefError(f"{where} has no description: write `- {member.name}: what "
                             f"{member.name} looks like` (images are optional)")
        if any(not src.strip() or "\n" in src for src in member.images):
            raise BriefError(f"{where}: an image is empty or spans lines; give one path or "
                             "URL per image")
        by_name[member.name.casefold()] = member
    segments = []
    for k, seg in enumerate(brief.segments):
        if seg.cast is not None:
            listed = []
            for name in seg.cast:
                found = by_name.get(name.strip().casefold())
                if found is None:
                    known = ", ".join(m.name for m in members) or "none"
                    raise BriefError(
                        f"shot {k + 1} lists {name.strip()!r}, which is not in the cast (defined: "
                        f"{known}). Define members in a Cast: block, one per line: "
                        "`- Name: description`, or under cast: in YAML")
                listed.append(found.name)
            seg = dataclasses.replace(seg, cast=tuple(dict.fromkeys(listed)))
        segments.append(seg)
    return dataclasses.replace(brief, segments=tuple(segments), cast=tuple(members))


def _entry(line: str) -> re.Match[str] | None:
    """A cast member's line (``- Name (kind): description``), if ``line`` is one."""
    m = CAST_ENTRY.match(re.sub(r"\*\*|__", "", line))
    if m is None or len(m.group("name").split()) > MAX_NAME_WORDS:
        return None
    return m


def _split_images(desc: str) -> tuple[str, list[str]]:
    """A description without its images, and the images (``Images: a, b`` or ``![](a)``)."""
    images = [m.group("src").strip("<>") for m in MD_IMAGE.finditer(desc)]
    desc = MD_IMAGE.sub("", desc)
    m = CAST_IMAGES.search(desc)
    if m is not None:
        images += [i.strip().strip("<>\"'") for i in re.split(r"[,;]", m.group("list"))]
        desc = desc[: m.start()] + (desc[m.start()] if desc[m.start()] in ".;," else "")
    return clean_prompt(desc).rstrip(",;"), [i for i in images if i]


def _cast_blocks(lines: list[tuple[int, str]]) -> tuple[list[CastMember], set[int]]:
    """The members of every ``Cast:`` block, and the indexes of the lines they take up."""
    members: list[CastMember] = []
    used: set[int] = set()
    i = 0
    while i < len(lines):
        if not CAST_HEADER.match(lines[i][1]):
            i += 1
            continue
        k = i + 1
        while k < len(lines) and not lines[k][1].strip():
            k += 1  # blank lines between the header and its first member
        entries: list[tuple[re.Match[str], list[str]]] = []
        while k < len(lines) and lines[k][1].strip():
            line = lines[k][1]
            indent = len(line) - len(line.lstrip())
            m = _entry(line)
            if entries and indent > len(entries[-1][0].group("indent")) and (
                    m is None or line.lstrip()[:1] not in "-*•"):
                entries[-1][1].append(line.strip())  # an indented line goes with its member
            elif m is not None:
                entries.append((m, []))
            else:
                break
            k += 1
        if not entries:
            i += 1
            continue
        used.update(range(i, k))
        for m, more in entries:
            pieces = [_split_images(piece) for piece in (m.group("desc"), *more)]
            desc = ""
            for piece, _ in pieces:  # lines under a member continue its description
                stop = "" if not desc or desc[-1] in ".!?;,:" or not piece[:1].isupper() else "."
                desc = f"{desc}{stop} {piece}".strip() if piece else desc
            members.append(CastMember(m.group("name").strip(), desc,
                                      tuple(i for _, images in pieces for i in images),
                                      (m.group("kind") or "").strip() or None))
        i = k
    return members, used


# --- free text ----------------------------------------------------------------------

LineKind = Literal["action", "cue", "dialogue"]


@dataclass
class _Open:
    """A shot being collected line by line."""

    start: int
    label: str = ""
    label_at: int = 0  # where the label's text starts in the brief
    seconds: float | None = None
    hint: str | None = None
    hint_kind: HintKind | None = None
    parts: list[Span] = field(default_factory=list)
    gaps: list[bool] = field(default_factory=list)  # a blank line before each part
    depth: int = 0  # Markdown heading level that opened it, 0 otherwise
    first_is_marker: bool = False  # the first part is the text after a shot marker
    blank: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)  # first_frame, last_frame, cast

    def direct(self, key: str, value: str, where: int) -> None:
        """Take a ``First frame:``/``Last frame:``/``Cast:`` directive for this shot."""
        key = key.casefold()
        field_ = ("first_frame" if re.fullmatch(_FIRST_WORDS, key) else
                  "last_frame" if re.fullmatch(_LAST_WORDS, key) else "cast")
        if field_ in self.inputs:
            raise BriefError(f"the shot at character {where} gives its {field_.replace('_', ' ')} "
                             "twice; give it once")
        value = value.strip().strip("<>\"'")
        self.inputs[field_] = (tuple(n.strip() for n in re.split(r"[,;]", value) if n.strip())
                               if field_ == "cast" else value)

    def add(self, text: str, start: int) -> None:
        if not text.strip():
            self.blank = True
            return
        self.parts.append((start, start + len(text)))
        self.gaps.append(self.blank)
        self.blank = False

    def kinds(self, text: str) -> list[LineKind]:
        """Action, character cue or dialogue, for each line (only action lines carry hints)."""
        out: list[LineKind] = []
        speaking = False
        for i, (a, b) in enumerate(self.parts):
            line = text[a:b]
            speaking = speaking and not self.gaps[i]
            follows = i + 1 < len(self.parts) and not self.gaps[i + 1]
            if speaking or INLINE_DIALOGUE.match(line):
                out.append("dialogue")
            elif (CUE.match(line) and follows and not (i == 0 and self.first_is_marker)
                  and _marker(line) is None):
                out.append("cue")
                speaking = True
            else:
                out.append("action")
        return out


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


def _body_hint(shot: _Open, text: str) -> tuple[list[Span], _Hint | None]:
    """A hint at the end of the last action line, or else at the start of the first."""
    parts, kinds = list(shot.parts), shot.kinds(text)
    for index, where in ((len(parts) - 1, "end"), (0, "start")):
        if not parts or kinds[index] != "action":
            continue
        a, b = parts[index]
        found = _hint_at(text[a:b], where)  # type: ignore[arg-type]
        if found is not None:
            return _cut(parts, (a + found.span[0], a + found.span[1])), found
    return parts, None


def _directives(shot: _Open, text: str) -> None:
    """Take ``(first frame: a.png)``-style directives out of the shot's text."""
    parts: list[Span] = []
    gaps: list[bool] = []
    for (a, b), gap in zip(shot.parts, shot.gaps, strict=True):
        pos = a
        found = sorted([*DIRECTIVE_INLINE.finditer(text[a:b]),
                        *CONTINUES_INLINE.finditer(text[a:b])], key=lambda m: m.start())
        for m in found:
            if m.re is CONTINUES_INLINE:
                shot.inputs["continues"] = True
            else:
                shot.direct(m.group("key"), m.group("value"), a + m.start())
            if text[pos : a + m.start()].strip():
                parts.append((pos, a + m.start()))
                gaps.append(gap and pos == a)
            pos = a + m.end()
        if text[pos:b].strip():
            parts.append((pos, b))
            gaps.append(gap and pos == a)
    shot.parts, shot.gaps = parts, gaps
    while (inline := DIRECTIVE_INLINE.search(shot.label)) is not None:
        shot.direct(inline.group("key"), inline.group("value"), shot.label_at + inline.start())
        shot.label = shot.label[: inline.start()] + shot.label[inline.end():]
    while (mark := CONTINUES_INLINE.search(shot.label)) is not None:
        shot.inputs["continues"] = True
        shot.label = shot.label[: mark.start()] + shot.label[mark.end():]


def _finish(shot: _Open | None, text: str, out: list[Segment]) -> None:
    if shot is None:
        return
    _directives(shot, text)
    label = shot.label
    if shot.seconds is None and label:
        found = _hint_at(label, "end") or _hint_at(label, "start")
        if found is not None:
            shot.seconds, shot.hint, shot.hint_kind = found.seconds, found.text, "text"
            label = label[: found.span[0]] + " " + label[found.span[1] :]
    label_prompt = clean_prompt(label)
    parts = list(shot.parts)
    if shot.seconds is None:
        parts, found = _body_hint(shot, text)
        if found is not None:
            shot.seconds, shot.hint, shot.hint_kind = found.seconds, found.text, "text"
    prompt = clean_prompt(_join(text, parts))
    if shot.label and shot.depth == 0:
        prompt = f"{label_prompt} {prompt}".strip()
    elif not prompt:  # a heading with no body is itself the shot's description
        prompt = label_prompt
        if label_prompt:
            parts.append((shot.label_at, shot.label_at + len(shot.label)))
    if not prompt:
        return
    end = max([b for _, b in shot.parts] + [b for _, b in parts] + [shot.start])
    context = label_prompt if shot.label and shot.depth == 0 else ""
    out.append(Segment(prompt, shot.start, end, shot.seconds, tuple(parts), context,
                       shot.hint, shot.hint_kind, **shot.inputs))


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
        shot.seconds, shot.hint, shot.hint_kind = b - a, m.group("tc").strip(), "timecode"
    if kind == "scene":
        found = _hint_at(rest, "end")
        if found is not None:
            shot.seconds, shot.hint, shot.hint_kind = found.seconds, found.text, "text"
            rest = rest[: found.span[0]]
        if (mark := SCENE_CONTINUOUS.search(rest)) is not None:
            shot.inputs["continues"] = True
            rest = rest[: mark.start()]
        shot.label, shot.label_at = _scene_phrase(m.group("kind"), rest), rest_at
    elif kind == "heading":
        shot.depth = len(m.group("hashes"))
        inner = SHOT_LABEL.match(rest)
        shot.label = inner.group("rest") if inner else rest
        shot.label_at = rest_at + (inner.start("rest") if inner else 0)
    else:
        shot.add(rest, rest_at)
        shot.first_is_marker = True
    return shot


def _meta_line(line: str, meta: dict[str, list[str]]) -> bool:
    """Consume a ``Style:`` or ``Title:`` line (in any of the languages above)."""
    for key, pattern in (("style", STYLE), ("title", TITLE)):
        m = pattern.match(line)
        if m:
            meta.setdefault(key, []).append(" ".join(m.group("rest").split()))
            return True
    return False


def _title_like(line: str) -> bool:
    """A short line with no sentence punctuation: how a title sits atop a brief."""
    stripped = line.strip().strip("*_#").strip()
    if not stripped or len(stripped) > 80 or len(stripped.split()) > 10:
        return False
    return stripped[-1] not in ".!?…。！？,;:，；：؟"


def _title_case(line: str) -> bool:
    """Title Case, ALL CAPS, or quoted: not how a shot's description is written."""
    stripped = line.strip().strip("*_").strip()
    if stripped[:1] in "\"“«《「『'" or stripped.upper() == stripped and any(c.isalpha() for c in stripped):
        return True
    words = [w for w in stripped.split() if len(w) > 3 and w[0].isalpha()]
    return len(words) >= 1 and all(w[0].isupper() for w in words) and stripped[0].isupper()


def _find_title(lines: list[tuple[int, str]], has_markers: bool, skip: set[int]) -> int | None:
    """The index of a title line atop the brief, if there is one (it is then not a shot)."""
    body = [i for i, (_, line) in enumerate(lines) if line.strip() and not STYLE.match(line)
            and not TITLE.match(line) and i not in skip]
    if len(body) < 2:
        return None
    first, line = body[0], lines[body[0]][1]
    if _marker(line) is not None or not _title_like(line) or CUE.match(line) and not _title_case(line):
        return None
    after = lines[first + 1][1] if first + 1 < len(lines) else ""
    separated = not after.strip() or bool(STYLE.match(after) or TITLE.match(after))
    if not separated:
        return None  # the first line of a paragraph, not a line of its own
    if bool(STYLE.match(after) or TITLE.match(after)) or _title_case(line):
        return first
    # Before the first shot marker, a short unpunctuated line can only be a title.
    return first if has_markers and _marker(lines[body[1]][1]) is not None else None


def _parse_lines(text: str, has_markers: bool, cast_lines: set[int]
                 ) -> tuple[list[Segment], dict[str, list[str]]]:
    out: list[Segment] = []
    meta: dict[str, list[str]] = {}
    shot: _Open | None = None
    lines = _lines(text)
    directives = {i for i, (_, line) in enumerate(lines) if DIRECTIVE_LINE.match(line)}
    title = _find_title(lines, has_markers, cast_lines | directives)
    pending: list[tuple[re.Match[str], int]] = []  # directives written before their shot opens
    for i, (offset, line) in enumerate(lines):
        _take_pending(shot, pending)
        if i == title:
            meta.setdefault("title", []).append(clean_prompt(line.strip().strip("#*_\"“”«»《》「」『』")))
            continue
        if i in cast_lines:
            if not has_markers:  # a cast block parts paragraphs as a blank line does
                _finish(shot, text, out)
                shot = None
            continue
        if i in directives:
            pending.append((DIRECTIVE_LINE.match(line), offset))  # type: ignore[arg-type]
            continue
        if _meta_line(line, meta):
            continue
        if not has_markers:
            if not line.strip():
                _finish(shot, text, out)
                shot = None
            else:
                if shot is None:
                    shot = _Open(start=offset + len(line) - len(line.lstrip()))
                shot.add(line, offset)
            continue
        shot = _marked_line(shot, line, offset, text, out, meta)
    _take_pending(shot, pending)
    _finish(shot, text, out)
    if pending:
        m, at = pending[0]
        raise BriefError(f"the {m.group('key')!r} line at character {at} belongs to no shot: "
                         "put it inside the shot it is for")
    return out, meta


def _marked_line(shot: _Open | None, line: str, offset: int, text: str, out: list[Segment],
                 meta: dict[str, list[str]]) -> _Open | None:
    """One line of a brief with shot markers; returns the shot open after it."""
    found = _marker(line)
    nested = bool(found and found[0] == "bullet" and shot and found[1].group("indent"))
    if found is None or nested:
        if line.strip() and shot is None:  # prose after a transition or rule starts a shot
            shot = _Open(start=offset + len(line) - len(line.lstrip()))
        if shot is not None:
            shot.add(line, offset)
        return shot
    kind, m = found
    # A heading directly followed by a deeper heading is a title, not a shot.
    if shot is not None and shot.depth and not shot.parts and kind == "heading":
        if len(m.group("hashes")) > shot.depth:
            if not meta.get("title"):
                meta["title"] = [clean_prompt(shot.label)]
            shot = None
    _finish(shot, text, out)
    return None if kind in ("rule", "transition") else _open_for(kind, m, offset, line)


def _take_pending(shot: _Open | None, pending: list[tuple[re.Match[str], int]]) -> None:
    """Give the open shot the directive lines written in it (or just before it opened)."""
    if shot is not None:
        for m, at in pending:
            shot.direct(m.group("key"), m.group("value"), at)
        pending.clear()


def parse_brief(text: str) -> Brief:
    """Parse a brief in any of the supported forms; raises BriefError if it has no shot."""
    if "\x00" in text:
        raise BriefError("the brief contains NUL bytes; it must be UTF-8 text")
    if not text.strip():
        raise BriefError("the brief is empty: write at least one sentence describing a shot")
    if _looks_structured(text):
        return _parse_structured(text)
    lines = _lines(text)
    members, cast_lines = _cast_blocks(lines)
    has_markers = any(_marker(line) is not None for i, (_, line) in enumerate(lines)
                      if i not in cast_lines and not DIRECTIVE_LINE.match(line))
    segments, meta = _parse_lines(text, has_markers, cast_lines)
    if not segments:
        raise BriefError(
            "the brief has no shot text: after the Style/Title lines and markup "
            "(headings, timecodes, transitions) nothing is left to film"
        )
    form = "shots" if has_markers else ("paragraphs" if len(segments) > 1 else "prose")
    style = "; ".join(meta["style"]) if meta.get("style") else None
    title = meta["title"][0] if meta.get("title") else None
    return _with_cast(Brief(text, tuple(_check_continues(segments)), style, title, form=form),
                      members)
