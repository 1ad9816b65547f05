"""The library face: plan, estimate (and later render) a brief in one call each.

Usage::

    import shotline
    p = shotline.plan(Path("brief.md"), model="fal/kling-video-v2.6-pro", seconds=20)
    e = shotline.estimate("A lighthouse at night. Waves crash.", model="runway/gen4.5")
    print(e.cost_usd)

A ``str`` is the brief's *text*; a path (``pathlib.Path`` or any ``os.PathLike``) is a
file read as UTF-8. Every other argument that names a file (``output``, a settings path)
takes a ``str`` or any ``os.PathLike``.

The images a brief names (its cast's pictures, first and last frames) are read, checked and
hashed by :func:`resolve`, before anything else happens (see :mod:`shotline.images`):
relative paths from the brief file's folder, or from the working directory for a brief
given as text.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from . import scratch
from .core import inputs
from .core.brief import Brief, parse_brief
from .core.capabilities import Capabilities, ModelTable, load_table
from .core.planner import Plan, PlanOptions, parse_transition
from .core.planner import plan as _plan
from .core.pricing import Estimate
from .core.pricing import estimate as _estimate
from .core.takes import check_count, every_key
from .errors import BriefError, Interrupted, UserError
from .images import Reader, local_reader
from .images import read as read_images
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
            with source.open("rb") as f:  # no more than a brief can be: a huge file is not read
                data = f.read(inputs.max_brief_bytes() + 1)
        except FileNotFoundError:
            raise BriefError(f"brief file {source} does not exist") from None
        except OSError as exc:
            raise BriefError(f"cannot read brief file {source}: {exc.strerror}") from None
        return parse_brief(inputs.decode_brief(data, f"brief file {source}"))
    return parse_brief(inputs.check_brief_text(source))


def check_brief(brief: Brief) -> None:
    """The settings a brief carries (YAML ``model``, ``fps``, ``seed``...) obey the same rules
    as options given beside it; raises InvalidRequest or BriefError."""
    inputs.check_options("brief", seconds=brief.seconds, **brief.settings)
    if len(brief.segments) > inputs.MAX_SHOTS:
        raise BriefError(f"the brief has {len(brief.segments):,} shots; at most "
                         f"{inputs.MAX_SHOTS} are allowed in one render: split it")
    for k, seg in enumerate(brief.segments):
        if seg.seconds is not None and not math.isfinite(seg.seconds):
            raise BriefError(f"shot {k + 1} asks for {seg.seconds} s: a duration must be a "
                             "finite number of seconds")
        if (count := len(seg.sentences(brief.text))) > inputs.MAX_SENTENCES:
            raise BriefError(f"shot {k + 1} has {count:,} sentences; a shot may have at most "
                             f"{inputs.MAX_SENTENCES:,}: split the brief into more shots")


@dataclass(frozen=True)
class Request:
    """A brief with every setting resolved against the model table, and its images read."""

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
    takes: int
    transition: str
    settings: Settings | None
    table: ModelTable | None
    yes: bool
    chain: bool


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
    takes: int = 1,
    transition: str = "none",
    settings: Settings | None = None,
    table: ModelTable | None = None,
    yes: bool = False,
    images: Reader | None = None,
    cache_scope: str | None = None,
    spelling: inputs.Spelling = "api",
    chain: bool = True,
) -> Request:
    """The brief parsed, every option checked (core/inputs.py) and resolved against the
    model table, and its images read; nothing is written.

    ``images`` reads one image source into bytes; by default paths (relative to the brief
    file's folder, else the working directory) and http(s) URLs are read.
    ``cache_scope`` is the tenant whose cache the shots' keys are in (None: the CLI's own,
    or a shared cache); ``spelling`` names options in messages as the caller's users write
    them (``--max-usd`` or ``max_usd``). ``chain=False`` renders continuations (a shot
    marked as continuing, or split from a long one) from their own prompts, concurrently,
    instead of from the last frame of the shot before.
    """
    settings = settings or Settings()
    inputs.check_options(spelling, model=model, seconds=seconds, size=size, fps=fps, audio=audio,
                         seed=seed, take=take, takes=takes, transition=transition,
                         yes=yes)
    check_count(takes, settings.max_takes)
    parsed = read_brief(brief)
    check_brief(parsed)
    table = table or load_table(settings.overrides_path)
    name = next(n for n in (model, parsed.settings.get("model"), settings.model) if n is not None)
    caps = table.get(name)
    options = PlanOptions(
        seconds=seconds,
        size=size,
        fps=fps,
        audio=audio,
        seed=seed,
        take=take,
        takes=takes,
        crossfade=parse_transition(transition),
        default_shot_seconds=settings.default_shot_seconds,
        max_target_seconds=settings.max_target_seconds,
        yes=yes,
        scope=cache_scope,
        chain=chain,
    )
    base = Path(brief).parent if isinstance(brief, os.PathLike) else Path.cwd()
    parsed = read_images(parsed, images or local_reader(base, settings), settings)
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
    keys = every_key(the_plan, req.caps)
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
    loudness: bool | None  # None: the loudness setting decides


def _prepare(brief: BriefSource, output: PathLike | None, preview: bool,
             max_usd: Decimal | float | None, kwargs: Options,
             loudness: bool | None = None) -> _Prepared:
    settings = kwargs.get("settings") or Settings()
    kwargs["settings"] = settings
    req = resolve(brief, **kwargs)
    the_plan = _plan(req.brief, req.caps, req.options)
    table = kwargs.get("table") or load_table(settings.overrides_path)
    cap = inputs.check_options("api", max_usd=None if max_usd is None else str(max_usd)).max_usd
    return _Prepared(settings, req, the_plan, table.drawing(req.caps, preview=preview),
                     output_path(output), cap, preview, loudness)


def _sweep(store: Store, output: Path | None) -> None:
    """Remove what a killed run left half-written in the store, and beside the output."""
    store.sweep()
    if output is not None and output.parent.is_dir():
        scratch.sweep(output.parent, recursive=False, prefix=output.stem + ".")


async def _run(job_in: _Prepared, listener: Listener | None) -> RenderResult:
    from .engine.renderer import RenderJob, render_plan

    settings, req, the_plan = job_in.settings, job_in.request, job_in.plan
    provider = load_provider(job_in.drawing.provider, settings)
    db, store = open_store(settings)
    _sweep(store, job_in.output)
    job = RenderJob(
        caps=job_in.drawing, provider=provider, settings=settings, db=db, store=store,
        brief_text=req.brief.text, output=job_in.output, max_usd=job_in.max_usd,
        listener=listener or (lambda _: None), loudness=job_in.loudness,
        images=dict(req.brief.image_data),
    )
    try:
        result = await render_plan(the_plan, job)
        if job_in.preview:  # what the real model would charge for this brief now
            keys = every_key(the_plan, req.caps)
            result.estimate_usd = _estimate(the_plan, req.caps, store.stored(keys)).cost_usd
    finally:
        await provider.aclose()
        db.close()
    return result


def _interrupted(job_in: _Prepared) -> Interrupted:
    """Ctrl-C: say how many shots the vendor is making (paid) and how to resume."""
    from .store import calls

    keys = every_key(job_in.plan, job_in.drawing)
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
    loudness: bool | None = None,
    **kwargs: Unpack[Options],
) -> RenderResult:
    """Render ``brief`` into one verified MP4 (async). See :func:`render`."""
    return await _run(_prepare(brief, output, preview, max_usd, kwargs, loudness), listener)


def render(
    brief: BriefSource,
    *,
    output: PathLike | None = None,
    listener: Listener | None = None,
    preview: bool = False,
    max_usd: Decimal | float | None = None,
    loudness: bool | None = None,
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
    ``result.estimate_usd`` then says what the real render would cost. Every shot's sound
    is brought to ``settings.loudness_target`` unless ``loudness=False`` (or the
    ``loudness`` setting is off); ``result.flags`` lists what the quality gate found. Raises
    ``RenderFailed`` (the clips made are kept) if a shot fails, and ``Interrupted`` (a
    ``KeyboardInterrupt``) on Ctrl-C, saying how many paid shots are still in flight:
    calling ``render`` again with the same arguments resumes them without paying twice.
    """
    prepared = _prepare(brief, output, preview, max_usd, kwargs, loudness)
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
        _sweep(store, target)
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
