"""The library face: plan, estimate (and later render) a brief in one call each.

Usage::

    import shotline
    p = shotline.plan(Path("brief.md"), model="fal/kling-video-v2.6-pro", seconds=20)
    e = shotline.estimate("A lighthouse at night. Waves crash.", model="runway/gen4.5")
    print(e.cost_usd)

A ``str`` is the brief's text; a ``Path`` is read as UTF-8.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from .brief import Brief, parse_brief
from .cache import Store
from .capabilities import Capabilities, ModelTable, load_table
from .db import Database
from .errors import BriefError
from .planner import Plan, PlanOptions, parse_transition
from .planner import plan as _plan
from .plugins import load_provider
from .pricing import Estimate
from .pricing import estimate as _estimate
from .settings import Settings

if TYPE_CHECKING:  # rendering imports PyAV and ffmpeg helpers: only load them to render
    from .renderer import Listener, RenderResult

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


def open_store(settings: Settings) -> tuple[Database, Store]:
    """The database and file store under ``settings.home`` (or the configured URL)."""
    db = Database.for_home(settings.home, settings.database_url)
    return db, Store(db, settings.home / "store")


async def arender(
    brief: BriefSource,
    *,
    output: Path | None = None,
    listener: Listener | None = None,
    preview: bool = False,
    max_usd: Decimal | float | None = None,
    loudness: bool | None = None,
    **kwargs: Unpack[Options],
) -> RenderResult:
    """Render ``brief`` into one verified MP4 (async). See :func:`render`."""
    from .renderer import RenderJob, render_plan

    settings = kwargs.get("settings") or Settings()
    kwargs["settings"] = settings
    req = resolve(brief, **kwargs)
    the_plan = _plan(req.brief, req.caps, req.options)
    table = kwargs.get("table") or load_table(settings.overrides_path)
    caps = table.drawing(req.caps, preview=preview)
    if max_usd is not None and Decimal(str(max_usd)) < 0:
        raise BriefError(f"max_usd must be 0 or more, got {max_usd}")
    provider = load_provider(caps.provider, settings)
    db, store = open_store(settings)
    job = RenderJob(
        caps=caps, provider=provider, settings=settings, db=db, store=store,
        brief_text=req.brief.text, output=output,
        max_usd=None if max_usd is None else Decimal(str(max_usd)),
        listener=listener or (lambda _: None), loudness=loudness,
    )
    try:
        result = await render_plan(the_plan, job)
    finally:
        await provider.aclose()
        db.close()
    result.estimate_usd = _estimate(the_plan, req.caps).cost_usd
    return result


def render(
    brief: BriefSource,
    *,
    output: Path | None = None,
    listener: Listener | None = None,
    preview: bool = False,
    max_usd: Decimal | float | None = None,
    loudness: bool | None = None,
    **kwargs: Unpack[Options],
) -> RenderResult:
    """Render ``brief`` into one finished, verified MP4 and return where it is.

    Usage::

        result = shotline.render(Path("brief.md"), seconds=20, audio=True, max_usd=5)
        print(result.output, result.seconds, result.cost_usd, result.render_id)

    Shots already in the store cost nothing; a brief identical to a finished render
    returns that render at once. ``max_usd`` caps this render (``BudgetError`` before
    any call if the estimate does not fit). With ``preview=True`` the plan uses
    ``model``'s durations and sizes but every shot is drawn by the free ``local``
    renderer; ``result.estimate_usd`` says what the real render would cost. Every shot's
    sound is brought to ``settings.loudness_target`` unless ``loudness=False`` (or the
    ``loudness`` setting is off). ``result.flags`` lists what the quality gate found. Raises
    ``RenderFailed`` (the clips made are kept) if a shot fails.
    """
    return asyncio.run(arender(brief, output=output, listener=listener, preview=preview,
                               max_usd=max_usd, loudness=loudness, **kwargs))
