"""What a user may give shotline, in one place: the limits and checks every face shares.

The library (:func:`shotline.api.resolve`), the command line and the HTTP API validate a
render's options with the types and functions here, so one bad value gets the same answer
everywhere: an :class:`~shotline.errors.InvalidRequest` (exit code 2, HTTP 422) that names
the value, says what is allowed, and comes before anything is written, sent or paid.

The limits, and why each is what it is:

* a brief is UTF-8 text of at most :data:`MAX_BRIEF_CHARS` characters (the API's body
  limit holds a brief that size in any script), with no NUL and no lone surrogate (a
  surrogate is not a character: it cannot be encoded, hashed into a key or sent on);
* a structured (YAML/JSON) brief nests at most :data:`MAX_NESTING` levels (its schema
  needs four); deeper input is refused while it is read, so no parser ever recurses into
  it; any brief has at most :data:`MAX_SHOTS` shots of at most :data:`MAX_SENTENCES`
  sentences each (what bounds the planner's work on a brief of any shape);
* a prompt as sent is at most :data:`MAX_PROMPT_CHARS` characters (vendors cut or refuse
  longer ones; a longer shot must be split into sentences or shots);
* a seed is 0 to 2**32-1, the unsigned 32-bit range every vendor with a seed accepts;
* numbers are finite: no NaN or infinity anywhere, and money is at most :data:`MAX_USD`;
* a model is ``provider/model``, at most 120 characters, never empty.

Pure: no I/O.
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..errors import BriefError, InvalidRequest

MAX_BRIEF_CHARS = 200_000
MAX_PROMPT_CHARS = 4000
MAX_NESTING = 32
MAX_SHOTS = 200  # written shots in a brief; a 600 s target is 3 s a shot
MAX_SENTENCES = 1000  # in one written shot: a shot is split at sentence ends, never more
MAX_SEED = 2**32 - 1
MAX_TAKE = 1000
MAX_TAKES = 8
MAX_FPS = 120
MAX_USD = Decimal(1_000_000_000)
MAX_MODEL_CHARS = 120
MAX_TEXT_CHARS = 2000  # a reason, a webhook URL: one line of text, not a document
# Row ids are 32-bit integers on Postgres: a larger one names nothing and must not reach SQL.
MAX_ROW_ID = 2**31 - 1

Spelling = Literal["cli", "api", "brief"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
MODEL_PATTERN = r"^[a-z0-9][a-z0-9_-]*/[^\s/][^\s]*$"


# --- text --------------------------------------------------------------------------------


def text_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode text (a NUL or a lone surrogate), or None."""
    if "\x00" in text:
        return f"it contains a NUL character (at character {text.index(chr(0))})"
    if m := _SURROGATE.search(text):
        return (f"it contains a lone surrogate ({ascii(m.group())} at character {m.start()}), "
                "which is not a character: send UTF-8 text")
    return None


def _valid_text(text: str) -> str:
    if (why := text_problem(text)) is not None:
        raise ValueError(f"not valid text: {why}")
    return text


def _one_line(text: str) -> str:
    _valid_text(text)
    if _CONTROL.search(text):
        raise ValueError("control characters (tabs, newlines) are not allowed here")
    return text


def shown(value: Any, limit: int = 60) -> str:
    """A user's value for an error message: quoted, escaped, cut short, never huge."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        # str() of a number with thousands of digits is refused (and slow): say its size.
        return str(value) if value.bit_length() <= 128 else f"(a {value.bit_length()}-bit number)"
    if isinstance(value, float | Decimal):
        return str(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        text = ascii(value[: limit + 1]) if _SURROGATE.search(value) else repr(value[: limit + 1])
        return text if len(value) <= limit else text[:-1] + "…" + text[-1]
    return f"(a {type(value).__name__})"


# Constraints come before the validators, so that they appear in the JSON schema (OpenAPI).
Text = Annotated[str, AfterValidator(_valid_text)]
Line = Annotated[str, AfterValidator(_one_line)]
BriefText = Annotated[str, Field(min_length=1, max_length=MAX_BRIEF_CHARS,
                                 description="The brief's text (UTF-8, at most "
                                 f"{MAX_BRIEF_CHARS:,} characters)."),
                      AfterValidator(_valid_text)]
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                              description=f"A prompt, at most {MAX_PROMPT_CHARS} characters."),
                   AfterValidator(_valid_text)]
ModelName = Annotated[str, Field(min_length=3, max_length=MAX_MODEL_CHARS, pattern=MODEL_PATTERN,
                                 description="PROVIDER/MODEL, e.g. local/preview."),
                      AfterValidator(_one_line)]
Size = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,3}x[1-9][0-9]{0,3}$",
                            description="Output size WxH with even sides, e.g. 1280x720.")]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False, description="Seconds, above 0.")]
Fps = Annotated[int, Field(ge=1, le=MAX_FPS, description="Frames a second, 1 to 120.")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="A seed, 0 to 2**32-1.")]
Take = Annotated[int, Field(ge=1, le=MAX_TAKE, description=f"A take number, 1 to {MAX_TAKE}.")]
# How many candidates of each shot to render; the operator's SHOTLINE_MAX_TAKES is the real
# limit (at most this), checked where the settings are known.
Takes = Annotated[int, Field(ge=1, le=MAX_TAKES, description="Candidates of each shot, "
                             f"rendered side by side (1 to SHOTLINE_MAX_TAKES, at most {MAX_TAKES}).")]
Transition = Annotated[str, Field(max_length=40, pattern=r"^(none|cut|crossfade:[0-9.]{1,10})?$",
                                  description="none, or crossfade:SECONDS at every join.")]
Usd = Annotated[Decimal, Field(ge=0, le=MAX_USD, allow_inf_nan=False,
                               description=f"USD, 0 to {MAX_USD:,}.")]
Url = Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=r"^\S+$",
                           description="An http(s) URL."), AfterValidator(_one_line)]
Reason = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS,
                              description="Why, for the record."), AfterValidator(_valid_text)]

ALLOWED = {
    "brief": f"UTF-8 text of 1 to {MAX_BRIEF_CHARS:,} characters",
    "model": "PROVIDER/MODEL, e.g. local/preview (`shotline providers` lists them)",
    "seconds": "a finite number of seconds above 0",
    "size": "WxH with even sides, e.g. 1280x720",
    "fps": f"a whole number of frames a second from 1 to {MAX_FPS}",
    "seed": f"a whole number from 0 to {MAX_SEED} (the range vendors take)",
    "take": f"a whole number from 1 to {MAX_TAKE}",
    "takes": "a whole number of candidates per shot from 1 to SHOTLINE_MAX_TAKES (4 by default)",
    "transition": "none, or crossfade:SECONDS with 0 < SECONDS <= 2",
    "max_usd": f"a finite number of USD from 0 to {MAX_USD:,}",
    "audio": "true or false",
    "yes": "true or false",
    "shots": "shot numbers from 1",
    "prompts": f"a new prompt per shot number, 1 to {MAX_PROMPT_CHARS} characters of text",
    "reason": f"1 to {MAX_TEXT_CHARS} characters of text",
    "webhook_url": f"an http(s) URL of at most {MAX_TEXT_CHARS} characters",
}


class RenderOptions(BaseModel):
    """The options of a plan, an estimate or a render, as every face accepts them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: ModelName | None = None
    seconds: Seconds | None = None
    size: Size | None = None
    fps: Fps | None = None
    audio: bool | None = None
    seed: Seed | None = None
    take: Take = 1
    takes: Takes = 1
    transition: Transition = "none"
    max_usd: Usd | None = None
    yes: bool = False
    chain: bool = True


# Where a value sat in an HTTP request: not part of its name.
_PLACES = ("body", "query", "header", "path", "cookie")
# Options whose CLI flag is singular and repeated (--shot 2 --shot 3).
_FLAGS = {"shots": "shot", "prompts": "prompt"}


def _parts(loc: tuple[Any, ...] | list[Any]) -> list[str]:
    return [str(p) for p in loc if p not in _PLACES]


def spell(loc: tuple[Any, ...] | list[Any], spelling: Spelling) -> str:
    """A field's name as the user wrote it: ``--max-usd`` (CLI), ``max_usd`` (API, library),
    ``the brief's seed`` in a structured brief; nested places as ``prompts.2``."""
    parts = _parts(loc)
    if not parts:
        return "the request body"
    if spelling == "cli":
        return "--" + _FLAGS.get(parts[0], parts[0]).replace("_", "-")
    if spelling == "brief":
        return "the brief's " + ".".join(parts)
    return ".".join(parts)


def explain(errors: list[Any], spelling: Spelling, allowed_fields: str = "") -> str:
    """One line for pydantic's errors: each value refused, and what is allowed instead."""
    out = []
    for e in errors[:5]:
        loc = tuple(e.get("loc", ()))
        field = next(iter(_parts(loc)), "")
        name = spell(loc, spelling)
        kind = e.get("type", "")
        if kind == "json_invalid" or (kind in ("model_type", "dict_type") and not field):
            out.append(f"the request body is not a JSON object: {e.get('msg', 'invalid')}")
        elif kind == "missing":
            out.append(f"{name} is required ({ALLOWED.get(field, 'see the API reference')})")
        elif kind == "extra_forbidden":
            out.append(f"{name} is not a known field" +
                       (f"; the fields are {allowed_fields}" if allowed_fields else ""))
        else:
            why = ALLOWED.get(field) or str(e.get("msg", "invalid"))
            detail = {"value_error": str(e.get("msg", "")),
                      "string_unicode": "it contains a lone surrogate, which is not a character"
                      }.get(kind, "")
            out.append(f"{name} {shown(e.get('input'))} is not allowed"
                       + (f" ({detail.removeprefix('Value error, ')})" if detail else "")
                       + f": {why}")
    if len(errors) > 5:
        out.append(f"and {len(errors) - 5} more")
    return "; ".join(out)


def check_options(spelling: Spelling, **values: Any) -> RenderOptions:
    """The options, validated; raises :class:`InvalidRequest` naming each bad one."""
    try:
        return RenderOptions.model_validate(values)
    except ValidationError as exc:
        raise InvalidRequest(explain(exc.errors(), spelling)) from None


def check_brief_text(text: str, where: str = "the brief") -> str:
    """``text`` if it can be a brief: not too long, and real text. Raises BriefError."""
    if len(text) > MAX_BRIEF_CHARS:
        raise BriefError(f"{where} is {len(text):,} characters long; a brief may have at most "
                         f"{MAX_BRIEF_CHARS:,}: split it into several renders")
    if (why := text_problem(text)) is not None:
        raise BriefError(f"{where} is not text: {why}")
    return text


def decode_brief(data: bytes, where: str) -> str:
    """UTF-8 bytes (a file, stdin) as a brief's text; BriefError with the first bad byte.

    Read at most :func:`max_brief_bytes` + 1 bytes: more cannot be a brief anyway.
    """
    if len(data) > max_brief_bytes():
        raise BriefError(f"{where} is too long: a brief may have at most {MAX_BRIEF_CHARS:,} "
                         f"characters, and this one is over {max_brief_bytes():,} bytes: split "
                         "it into several renders")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BriefError(f"{where} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start} cannot be decoded (save the brief as UTF-8)") from None
    return check_brief_text(text.removeprefix("\ufeff"), where)


def max_brief_bytes() -> int:
    """The most bytes a brief of :data:`MAX_BRIEF_CHARS` characters can take in UTF-8."""
    return 4 * MAX_BRIEF_CHARS + 3  # a byte-order mark may come first


# --- structured briefs: nesting is refused while it is read -------------------------------


def _too_deep(kind: str) -> BriefError:
    return BriefError(f"the brief's {kind} nests more than {MAX_NESTING} levels deep; a "
                      "structured brief needs four (the brief, shots, a shot, its fields)")


def load_json(text: str) -> Any:
    """``json.loads`` for a brief, refusing nesting past :data:`MAX_NESTING` first."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # brackets inside strings do not nest
    depth = 0
    for m in re.finditer(r"[\[\]{}]", bare):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_NESTING:
            raise _too_deep("JSON")
    try:
        return json.loads(text)
    except RecursionError:  # unreachable past the scan above; never a traceback regardless
        raise _too_deep("JSON") from None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing to compose nodes deeper than :data:`MAX_NESTING`."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _too_deep("YAML")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` for a brief, refusing nesting past :data:`MAX_NESTING` as it reads."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
