"""The library face: plan, estimate (and later render) a brief in one call each.

Usage::

    import shotline
    p = shotline.plan(Path("brief.md"), model="fal/kling-video-v2.6-pro", seconds=20)
    e = shotline.estimate("A lighthouse at night. Waves crash.", model="runway/gen4.5")
    print(e.cost_usd)

A ``str`` is the brief's *text*; a path (``pathlib.Path`` or any ``os.PathLike``) is a
file read as UTF-8. Every other argument that names a file (``output``, a settings path)
takes a ``str`` or any ``os.PathLike``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from .core.brief import Brief, parse_brief
from .core.capabilities import Capabilities, ModelTable, load_table
from .core.keys import planned_key
from .core.planner import Plan, PlanOptions, parse_transition
from .core.planner import plan as _plan
from .core.pricing import Estimate
from .core.pricing import estimate as _estimate
from .errors import BriefError, Interrupted, UserError
from .providers.plugins import load_provider
from .settings import Settings
from .store.cache import Store
from .store.db import Database

if TYPE_CHECKING:  # rendering imports PyAV and ffmpeg helpers: only load them to render
    from .engine.renderer import Listener, RenderResult

BriefSource = str | os.PathLike[str] | Brief
PathLike = str | os.PathLike[str]


def read_brief(source: BriefSource) -> Brief:
    """Parse a brief given as text (a ``str``), a file path (``os.PathLike``), or a Brief."""
    if isinstance(source, Brief):
        return source
    if isinstance(source, os.PathLike):
        source = Path(source)
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
    yes: bool


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
    yes: bool = False,
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
        yes=yes,
    )
    return Request(parsed, caps, options)


def plan(brief: BriefSource, **kwargs: Unpack[Options]) -> Plan:
    """Plan ``brief``: the ordered shots, their durations and source spans. No I/O but reading."""
    req = resolve(brief, **kwargs)
    return _plan(req.brief, req.caps, req.options)


def estimate(brief: BriefSource, **kwargs: Unpack[Options]) -> Estimate:
    """What rendering ``brief`` would pay now, shot by shot, before any call is made.

    A shot already in the store costs 0 (``stored``); ``full_usd`` is the price without
    the store. A render started right after reserves and reports this same figure.
    """
    settings = kwargs.get("settings") or Settings()
    req = resolve(brief, **kwargs)
    the_plan = _plan(req.brief, req.caps, req.options)
    keys = [planned_key(the_plan, s, req.caps) for s in the_plan.shots]
    return _estimate(the_plan, req.caps, stored_keys(settings, keys), settings.max_attempts)


def open_store(settings: Settings) -> tuple[Database, Store]:
    """The database (``settings.database_url``, else SQLite under ``settings.home``) and the
    store (``settings.storage``, else files under ``settings.home``)."""
    from .store.blobs import open_blobs

    blobs = open_blobs(settings)  # a malformed SHOTLINE_STORAGE is refused before the database
    db = Database.for_home(settings.home, settings.database_url)
    return db, Store(db, blobs, settings.scratch)


def stored_keys(settings: Settings, keys: list[str]) -> frozenset[str]:
    """Which ``keys`` have stored clips; creates nothing where nothing was ever rendered."""
    if settings.database_url is None and not (settings.home / "shotline.db").exists():
        return frozenset()
    db, store = open_store(settings)
    try:
        return store.stored(keys)
    finally:
        db.close()


def output_path(output: PathLike | None) -> Path | None:
    """Check where a render will write before anything is paid for; None keeps it in the store."""
    if output is None:
        return None
    path = Path(os.fspath(output)).expanduser()
    if path.is_dir():
        raise UserError(f"output {path} is a directory: give a file name, e.g. {path / 'video.mp4'}")
    parent = path.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {parent} is not a writable directory")
    return path


@dataclass(frozen=True)
class _Prepared:
    """A render checked and planned, before anything is written or paid."""

    settings: Settings
    request: Request
    plan: Plan
    drawing: Capabilities  # what draws the shots: the model itself, or local for a preview
    output: Path | None
    max_usd: Decimal | None
    preview: bool


def _prepare(brief: BriefSource, output: PathLike | None, preview: bool,
             max_usd: Decimal | float | None, kwargs: Options) -> _Prepared:
    settings = kwargs.get("settings") or Settings()
    kwargs["settings"] = settings
    req = resolve(brief, **kwargs)
    the_plan = _plan(req.brief, req.caps, req.options)
    table = kwargs.get("table") or load_table(settings.overrides_path)
    if max_usd is not None and Decimal(str(max_usd)) < 0:
        raise BriefError(f"max_usd must be 0 or more, got {max_usd}")
    return _Prepared(settings, req, the_plan, table.drawing(req.caps, preview=preview),
                     output_path(output), None if max_usd is None else Decimal(str(max_usd)),
                     preview)


async def _run(job_in: _Prepared, listener: Listener | None) -> RenderResult:
    from .engine.renderer import RenderJob, render_plan

    settings, req, the_plan = job_in.settings, job_in.request, job_in.plan
    provider = load_provider(job_in.drawing.provider, settings)
    db, store = open_store(settings)
    job = RenderJob(
        caps=job_in.drawing, provider=provider, settings=settings, db=db, store=store,
        brief_text=req.brief.text, output=job_in.output, max_usd=job_in.max_usd,
        listener=listener or (lambda _: None),
    )
    try:
        result = await render_plan(the_plan, job)
        if job_in.preview:  # what the real model would charge for this brief now
            keys = [planned_key(the_plan, s, req.caps) for s in the_plan.shots]
            result.estimate_usd = _estimate(the_plan, req.caps, store.stored(keys)).cost_usd
    finally:
        await provider.aclose()
        db.close()
    return result


def _interrupted(job_in: _Prepared) -> Interrupted:
    """Ctrl-C: say how many shots the vendor is making (paid) and how to resume."""
    from .store import calls

    keys = [planned_key(job_in.plan, s, job_in.drawing) for s in job_in.plan.shots]
    try:
        db, _ = open_store(job_in.settings)
        try:
            count = calls.in_flight(db, keys)
        finally:
            db.close()
    except Exception:  # the database itself may be what was interrupted: say what we can
        count = 0
    return Interrupted(count)


async def arender(
    brief: BriefSource,
    *,
    output: PathLike | None = None,
    listener: Listener | None = None,
    preview: bool = False,
    max_usd: Decimal | float | None = None,
    **kwargs: Unpack[Options],
) -> RenderResult:
    """Render ``brief`` into one verified MP4 (async). See :func:`render`."""
    return await _run(_prepare(brief, output, preview, max_usd, kwargs), listener)


def render(
    brief: BriefSource,
    *,
    output: PathLike | None = None,
    listener: Listener | None = None,
    preview: bool = False,
    max_usd: Decimal | float | None = None,
    **kwargs: Unpack[Options],
) -> RenderResult:
    """Render ``brief`` into one finished, verified MP4 and return where it is.

    Usage::

        result = shotline.render(Path("brief.md"), seconds=20, audio=True, max_usd=5,
                                 output="out/teaser.mp4")
        print(result.output, result.seconds, result.cost_usd, result.render_id)

    ``brief`` is the brief's text when it is a ``str``, a file when it is a path
    (``Path`` or any ``os.PathLike``); ``output`` may be either. Shots already in the store
    cost nothing; a brief identical to a finished render returns that render at once.
    ``result.estimate_usd`` is what was reserved before the first call (the same figure
    :func:`estimate` gives). ``max_usd`` caps this render (``BudgetError`` before any
    call if the estimate does not fit). With ``preview=True`` the plan uses ``model``'s
    durations and sizes but every shot is drawn by the free ``local`` renderer;
    ``result.estimate_usd`` then says what the real render would cost. Raises
    ``RenderFailed`` (the clips made are kept) if a shot fails, and ``Interrupted`` (a
    ``KeyboardInterrupt``) on Ctrl-C, saying how many paid shots are still in flight:
    calling ``render`` again with the same arguments resumes them without paying twice.
    """
    prepared = _prepare(brief, output, preview, max_usd, kwargs)
    try:
        return asyncio.run(_run(prepared, listener))
    except KeyboardInterrupt:
        raise _interrupted(prepared) from None


def resume(render_id: str, *, settings: Settings | None = None, listener: Listener | None = None,
           output: PathLike | None = None) -> RenderResult:
    """Run a render whose row exists, here and now: a library or CLI render after a
    re-roll (``shotline reroll``), or one left unfinished. Only shots not stored are paid
    for; the reservation made by the re-roll covers them."""
    settings = settings or Settings()
    target = output_path(output)

    async def run() -> RenderResult:
        import sqlalchemy as sa

        from .engine.renderer import RenderJob, render_plan
        from .store import lifecycle
        from .store.db import renders

        db, store = open_store(settings)
        try:
            with db.read() as conn:
                row = conn.execute(sa.select(renders).where(renders.c.id == render_id)).first()
                if row is None:
                    raise UserError(f"no render {render_id!r}; `shotline renders` lists them")
                preview = lifecycle.is_preview(conn, row)
            table = load_table(settings.overrides_path)
            caps = table.drawing(table.get(row.model), preview=preview)
            provider = load_provider(caps.provider, settings)
            job = RenderJob(caps=caps, provider=provider, settings=settings, db=db, store=store,
                            brief_text=row.brief, output=target, max_usd=row.max_usd,
                            listener=listener or (lambda _: None), render_id=row.id)
            try:
                result = await render_plan(Plan.model_validate(row.plan), job)
            finally:
                await provider.aclose()
            result.estimate_usd = Decimal(row.estimate_usd)
            return result
        finally:
            db.close()

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        from .store import calls, lifecycle

        db, _ = open_store(settings)
        try:
            keys = [s["key"] for s in (lifecycle.get_render(db, render_id) or {}).get("shots", [])]
            raise Interrupted(calls.in_flight(db, keys)) from None
        finally:
            db.close()
