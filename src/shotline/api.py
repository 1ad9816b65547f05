"""The library face: plan, estimate (and later render) a brief in one call each.

Usage::

    import shotline
    p = shotline.plan(Path("brief.md"), model="fal/kling-video-v2.6-pro", seconds=20)
    e = shotline.estimate("A lighthouse at night. Waves crash.", model="runway/gen4.5")
    print(e.cost_usd)

A ``str`` is the brief's text; a ``Path`` is read as UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from .brief import Brief, parse_brief
from .capabilities import Capabilities, ModelTable, load_table
from .errors import BriefError
from .planner import Plan, PlanOptions, parse_transition
from .planner import plan as _plan
from .pricing import Estimate
from .pricing import estimate as _estimate
from .settings import Settings

BriefSource = str | Path | Brief


def read_brief(source: BriefSource) -> Brief:
    """Parse a brief given as text, a file path, or an already parsed Brief."""
    if isinstance(source, Brief):
        return source
    if isinstance(source, Path):
        try:
            text = source.read_text("utf-8")
        except FileNotFoundError:
            raise BriefError(f"brief file {source} does not exist") from None
        except UnicodeDecodeError:
            raise BriefError(f"brief file {source} is not UTF-8 text") from None
        except OSError as exc:
            raise BriefError(f"cannot read brief file {source}: {exc.strerror}") from None
        return parse_brief(text)
    return parse_brief(source)


@dataclass(frozen=True)
class Request:
    """A brief with every setting resolved against the model table."""

    brief: Brief
    caps: Capabilities
    options: PlanOptions


class Options(TypedDict, total=False):
    """Keyword options shared by plan, estimate and render (all optional)."""

    model: str | None
    seconds: float | None
    size: str | None
    fps: int | None
    audio: bool | None
    seed: int | None
    take: int
    transition: str
    settings: Settings | None
    table: ModelTable | None


def resolve(
    brief: BriefSource,
    *,
    model: str | None = None,
    seconds: float | None = None,
    size: str | None = None,
    fps: int | None = None,
    audio: bool | None = None,
    seed: int | None = None,
    take: int = 1,
    transition: str = "none",
    settings: Settings | None = None,
    table: ModelTable | None = None,
) -> Request:
    settings = settings or Settings()
    parsed = read_brief(brief)
    table = table or load_table(settings.overrides_path)
    name = model or parsed.settings.get("model") or settings.model
    caps = table.get(name)
    if take < 1:
        raise BriefError(f"take must be 1 or more, got {take}")
    options = PlanOptions(
        seconds=seconds,
        size=size,
        fps=fps,
        audio=audio,
        seed=seed,
        take=take,
        crossfade=parse_transition(transition),
        default_shot_seconds=settings.default_shot_seconds,
        max_target_seconds=settings.max_target_seconds,
    )
    return Request(parsed, caps, options)


def plan(brief: BriefSource, **kwargs: Unpack[Options]) -> Plan:
    """Plan ``brief``: the ordered shots, their durations and source spans. No I/O but reading."""
    req = resolve(brief, **kwargs)
    return _plan(req.brief, req.caps, req.options)


def estimate(brief: BriefSource, **kwargs: Unpack[Options]) -> Estimate:
    """What rendering ``brief`` would cost, shot by shot, before any call is made."""
    req = resolve(brief, **kwargs)
    return _estimate(_plan(req.brief, req.caps, req.options), req.caps)
