"""What a client can do to renders: submit, approve, reject, re-roll, cancel.

The HTTP service and the CLI call these; workers then do the rendering. Invariants:

* Each action is one transaction: it either happens whole, with its budget reservation,
  events and webhooks, or (on bad input, a refused budget or a wrong state) not at all.
* ``tenant`` scopes everything: a render of another tenant is "not found". The CLI acts
  as the operator and passes ``tenant=None`` with ``operator=True`` to reach every render.
* A re-roll gives the chosen shots a new take, so they get new content keys: only they
  are paid for; the other shots come from the store when the worker restitches.
* Takes (core/takes.py): a render or a re-roll may ask for several candidates of a shot;
  each is reserved for and billed. A pick changes which one the output holds and
  restitches from the stored clips: no vendor call, nothing billed (unless a clip was
  pruned from the store since, which is then made again and reserved for like any shot).
* A tenant's brief may name images only by http(s) URL, fetched once at submit through the
  SSRF guard (public hosts only, every redirect hop checked); a path is refused, since it
  would read the server's own disk. The images are stored with the render they belong to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import httpx
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from sqlalchemy.engine import Connection

from .. import api, images
from ..core import inputs
from ..core.brief import Brief
from ..core.capabilities import Capabilities, ModelTable
from ..core.planner import Plan
from ..core.planner import plan as make_plan
from ..core.pricing import call_cost
from ..core.pricing import estimate as price
from ..core.takes import candidates, check_count, check_unchained, with_takes
from ..core.takes import pick as pick_take
from ..engine.renderer import loudness_target, plan_requests
from ..errors import BriefError, ImageError, NotFoundError, ProviderError, StateError
from ..providers.base import JobRef
from ..providers.plugins import load_provider
from ..settings import Settings
from ..store import images as stored_images
from ..store import ledger, lifecycle, slots
from ..store.cache import Store
from ..store.db import Database, calls, render_shots, renders
from . import queue, ssrf

MAX_PROMPT = inputs.MAX_PROMPT_CHARS
log = logging.getLogger(__name__)
ShotNumber = Annotated[int, Field(ge=1, le=inputs.MAX_SHOTS)]
# Money in JSON: a number, or a decimal string as every answer writes it ("2.5").
MaxUsd = Annotated[inputs.Usd, WithJsonSchema({"anyOf": [
    {"type": "number", "minimum": 0, "maximum": int(inputs.MAX_USD)},
    {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,6})?$"}]})]


class RenderRequest(BaseModel):
    """A render as a client asks for it (the body of ``POST /v1/renders``).

    Every field has the type the library and the CLI check the same option with
    (core/inputs.py), so the API, its OpenAPI schema and the CLI agree on what is allowed.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    brief: inputs.BriefText
    seconds: inputs.Seconds | None = Field(None, description="Target length of the output.")
    model: inputs.ModelName | None = Field(None, description="PROVIDER/MODEL (default: the "
                                           "brief's or the operator's default).")
    size: inputs.Size | None = Field(None, description="Output size WxH, e.g. 1280x720.")
    fps: inputs.Fps | None = Field(None, description="Output frame rate.")
    audio: bool | None = Field(None, description="An audio track (may raise the price).")
    seed: inputs.Seed | None = Field(None, description="Seed for models that take one "
                                     "(0 to 2**32-1).")
    transition: inputs.Transition = Field("none", description="none, or crossfade:SECONDS at "
                                          "every join.")
    max_usd: MaxUsd | None = Field(None, description="The most this render may ever bill, "
                                   "re-rolls and billed retries included (USD).")
    webhook_url: inputs.Url | None = Field(None, description="Told of awaiting_review, "
                                           "published, failed...")
    auto_approve: bool = Field(False, description="Publish without waiting for a review.")
    preview: bool = Field(False, description="Plan for `model`, draw every shot for free with "
                          "the local renderer.")
    yes: bool = Field(False, description="Accept a duration hint in the brief's text that "
                      "more than doubles the billed seconds (refused otherwise, quoting it).")
    loudness: bool | None = Field(None, description="Bring every shot to the operator's "
                                  "loudness target (default: the operator's setting); false "
                                  "keeps each clip's own level.")
    takes: inputs.Takes = Field(1, description="Candidates of every shot, rendered side by "
                                "side and each billed; the reviewer picks one per shot "
                                "(POST /v1/renders/{id}/shots/{n}/pick).")
    chain: bool = Field(True, description="Start a continuation (a shot marked as continuing, "
                        "or split from a long one) from the last frame of the shot before, on "
                        "models that take a first frame; such a chain renders in order.")


class RerollRequest(BaseModel):
    """Which shots to make again (numbered from 1), and optionally new prompts for them."""

    model_config = ConfigDict(extra="forbid")

    shots: list[ShotNumber] = Field(min_length=1, max_length=inputs.MAX_SHOTS,
                                    description="Shot numbers, from 1.")
    prompts: dict[ShotNumber, inputs.Prompt] = Field(
        default_factory=dict, max_length=inputs.MAX_SHOTS,
        description="New prompt per shot number (optional).")
    takes: inputs.Takes = Field(1, description="New candidates of each chosen shot, rendered "
                                "side by side and each billed; the first is picked until the "
                                "reviewer picks another.")


class PickRequest(BaseModel):
    """Which take of a shot the output holds."""

    model_config = ConfigDict(extra="forbid")

    take: inputs.Take = Field(description="A take number the shot has (see its `takes`).")


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: inputs.Reason


def _limits(conn: Connection, settings: Settings, tenant: str | None,
            max_usd: Decimal | None) -> ledger.Limits:
    return ledger.limits(conn, tenant=tenant, per_render=max_usd,
                         daily=settings.daily_budget_usd, monthly=settings.monthly_budget_usd)


def cache_scope(settings: Settings, tenant: str | None) -> str | None:
    """Whose cache a tenant's shots are in: its own, unless the operator shares one cache
    between every tenant (``SHOTLINE_SHARED_CACHE``, which saves money and tells a tenant
    that someone rendered a prompt). None is the CLI's own cache, and the shared one."""
    return None if settings.shared_cache or tenant is None else tenant


async def submit(db: Database, settings: Settings, table: ModelTable, tenant: str | None,
                 req: RenderRequest, *, resolver: ssrf.Resolver | None = None,
                 also: Callable[[Connection, dict[str, Any]], None] | None = None,
                 ) -> tuple[dict[str, Any], bool]:
    """Queue a render; ``(view, created)``. A finished twin is returned instead, cost 0.

    ``also`` runs in the same transaction with the answer (the idempotency record).
    """
    brief = api.read_brief(req.brief)
    fetched = await fetch_images(brief, settings, resolver or ssrf.resolve)
    resolved = api.resolve(brief, model=req.model, seconds=req.seconds, size=req.size,
                           fps=req.fps, audio=req.audio, seed=req.seed,
                           transition=req.transition, settings=settings, table=table,
                           yes=req.yes, images=fetched.__getitem__, chain=req.chain,
                           cache_scope=cache_scope(settings, tenant), takes=req.takes)
    plan = make_plan(resolved.brief, resolved.caps, resolved.options)
    options = req.model_dump(mode="json", exclude={"brief", "webhook_url", "auto_approve"})
    caps = table.drawing(resolved.caps, preview=req.preview)
    requests, key = plan_requests(plan, caps, settings, loudness_target(settings, req.loudness),
                                  resolved.brief.image_data)
    if req.webhook_url:
        await ssrf.check_url(req.webhook_url, allow_private=settings.allow_private_webhooks,
                             resolver=resolver or ssrf.resolve)
    await _preflight(settings, caps, requests)
    estimate = price(plan, resolved.caps).cost_usd
    todo = sum((call_cost(caps, r.seconds, r.size, r.audio).cost_usd for r in requests),
               Decimal(0))

    def commit() -> tuple[dict[str, Any], bool]:
        with db.write() as conn:
            if (twin := lifecycle.finished_twin(conn, tenant, key)) is not None:
                view, created = lifecycle.describe(conn, twin, settings.public_url), False
            else:
                stored_images.put(conn, plan.images(), resolved.brief.image_data)
                render_id = lifecycle.enqueue(
                    conn, tenant=tenant, key=key, model=plan.model, brief=resolved.brief.text,
                    plan=plan.model_dump(mode="json"), shot_keys=[r.key for r in requests],
                    estimate=estimate, options=options, webhook_url=req.webhook_url,
                    auto_approve=req.auto_approve, max_usd=req.max_usd)
                ledger.reserve(conn, render_id, todo,
                               _limits(conn, settings, tenant, req.max_usd))
                queue.dispatch(settings, render_id, key)  # last: a refusal rolls all back
                view, created = lifecycle.describe(conn, render_id, settings.public_url), True
            if also is not None:
                also(conn, view)
        return view, created

    return await asyncio.to_thread(commit)  # the write lock may be waited for


async def fetch_images(brief: Brief, settings: Settings,
                       resolver: ssrf.Resolver) -> dict[str, bytes]:
    """The bytes of every image ``brief`` names, fetched through the SSRF guard.

    Only http(s) URLs: a path would read the server's own disk. Nothing is written.
    """
    sources = brief.image_sources()
    if paths := [s for s in sources if not images.is_url(s)]:
        raise ImageError(f"image {paths[0]}: the service reads images only from http(s) URLs, "
                         "never from its own disk; give the image as a URL")
    if len(sources) > settings.max_images:
        raise ImageError(f"the brief names {len(sources)} images, over the "
                         f"{settings.max_images} allowed (SHOTLINE_MAX_IMAGES)")
    if not sources:
        return {}
    guard = ssrf.PinnedTransport(allow_private=settings.allow_private_images, resolver=resolver,
                                 purpose=ssrf.IMAGE)
    async with httpx.AsyncClient(transport=guard, follow_redirects=False,
                                 timeout=settings.image_timeout) as client:
        return await images.fetch_all(sources, client, settings)


async def _preflight(settings: Settings, caps: Capabilities, requests: list[Any]) -> None:
    """A missing vendor key is found now, before anything is queued or reserved."""
    provider = load_provider(caps.provider, settings)
    try:
        for request in requests:
            provider.preflight(request)
    finally:
        await provider.aclose()


def _row(conn: Connection, tenant: str | None, render_id: str, operator: bool, *,
         lock: bool = False) -> Any:
    """The render, if ``tenant`` may see it; ``lock`` holds its row until the transaction ends
    (taken before any budget lock: see db.py for the order)."""
    query = sa.select(renders).where(renders.c.id == render_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None or (not operator and row.tenant_id != tenant):
        raise NotFoundError(f"no render {render_id!r}")
    return row


def get(db: Database, tenant: str | None, render_id: str, *, base_url: str = "",
        operator: bool = False) -> dict[str, Any]:
    with db.read() as conn:
        _row(conn, tenant, render_id, operator)
        return lifecycle.describe(conn, render_id, base_url)


def _act(db: Database, tenant: str | None, render_id: str, status: str, verb: str, *,
         allowed: str, base_url: str, operator: bool, **values: Any) -> dict[str, Any]:
    with db.write() as conn:
        row = _row(conn, tenant, render_id, operator)
        if not lifecycle.transition(conn, render_id, status, base_url=base_url, **values):
            raise StateError(f"render {render_id} is {row.status}: only a render that is "
                             f"{allowed} can be {verb}")
        if status == "cancelled":
            ledger.settle(conn, render_id)
        return lifecycle.describe(conn, render_id, base_url)


def approve(db: Database, tenant: str | None, render_id: str, *, base_url: str = "",
            operator: bool = False) -> dict[str, Any]:
    return _act(db, tenant, render_id, "published", "approved", allowed="awaiting_review",
                base_url=base_url, operator=operator)


def reject(db: Database, tenant: str | None, render_id: str, reason: str, *,
           base_url: str = "", operator: bool = False) -> dict[str, Any]:
    reason = reason.strip()
    if not reason:
        raise BriefError("a rejection needs a reason (1 to 2000 characters)")
    return _act(db, tenant, render_id, "rejected", "rejected", allowed="awaiting_review",
                base_url=base_url, operator=operator, review_note=reason[:2000])


def reroll(db: Database, settings: Settings, table: ModelTable, tenant: str | None,
           render_id: str, req: RerollRequest, *, store: Store, operator: bool = False,
           also: Callable[[Connection, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Make the chosen shots again as new takes, then restitch; only they are billed.

    The reservation covers the chosen shots plus any other shot whose clip is not stored
    (the shots that failed, when a failed render is re-rolled).
    """
    with db.write() as conn:
        row = _row(conn, tenant, render_id, operator, lock=True)
        if row.status not in ("awaiting_review", "failed"):
            raise StateError(f"render {render_id} is {row.status}: only a render that is "
                             "awaiting_review or failed can be re-rolled")
        plan = Plan.model_validate(row.plan)
        chosen = _check_reroll(req, len(plan.shots))
        check_count(req.takes, settings.max_takes)
        if req.takes > 1:
            for n in chosen:
                check_unchained(plan, n)
        shots = list(plan.shots)
        for n in chosen:
            old = shots[n - 1]
            # New take numbers, after every take the shot had: each is a new call.
            shots[n - 1] = with_takes(old.model_copy(update={
                "prompt": req.prompts.get(n, old.prompt)}), req.takes,
                first=max(candidates(old)) + 1)
        plan = plan.model_copy(update={"shots": tuple(shots)})
        fresh = {k for k, s in enumerate(plan.shots) if k + 1 in chosen}
        view = _restart(conn, settings, table, row, plan, store, fresh, "reroll", {
            "shots": chosen, "prompts": {str(k): v for k, v in req.prompts.items()},
            **({"takes": req.takes} if req.takes > 1 else {})})
        if also is not None:
            also(conn, view)
        return view


def pick(db: Database, settings: Settings, table: ModelTable, tenant: str | None,
         render_id: str, number: int, req: PickRequest, *, store: Store,
         operator: bool = False) -> dict[str, Any]:
    """Make the output hold take ``req.take`` of shot ``number`` and restitch it from the
    stored clips (no vendor call); the render awaits review again once it is stitched.
    Picking the take already picked changes nothing."""
    with db.write() as conn:
        row = _row(conn, tenant, render_id, operator, lock=True)
        if row.status != "awaiting_review":
            raise StateError(f"render {render_id} is {row.status}: a take can be picked only "
                             "while the render awaits review")
        plan = Plan.model_validate(row.plan)
        picked = pick_take(plan, number, req.take)
        if picked == plan:
            return lifecycle.describe(conn, render_id, settings.public_url)
        return _restart(conn, settings, table, row, picked, store, set(), "pick",
                        {"shot": number, "take": req.take})


def _restart(conn: Connection, settings: Settings, table: ModelTable, row: Any, plan: Plan,
             store: Store, fresh: set[int], kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """Render ``plan`` again in place of the render's: reserve for every call whose clip is
    not stored (and every take of the shots in ``fresh``), lay the rows out anew, and send
    it to be made and restitched."""
    render_id = row.id
    caps = table.drawing(table.get(row.model), preview=lifecycle.is_preview(conn, row))
    loudness = loudness_target(settings, (row.options or {}).get("loudness"))
    requests, key = plan_requests(plan, caps, settings, loudness)
    owners = [s.index for s in plan.shots] + [
        s.index for s in plan.shots for t in candidates(s) if t != s.take]
    amount = sum((call_cost(caps, r.seconds, r.size, r.audio).cost_usd
                  for r, owner in zip(requests, owners, strict=True)
                  if owner in fresh or store.clip(r.key, conn) is None), Decimal(0))
    # max_usd caps everything the render ever bills, re-rolls included.
    ledger.reserve(conn, render_id, ledger.billed(conn, render_id) + amount,
                   _limits(conn, settings, row.tenant_id, row.max_usd))
    lifecycle.lay_out(conn, render_id, [r.key for r in requests])
    lifecycle.transition(conn, render_id, "rendering", base_url=settings.public_url,
                         plan=plan.model_dump(mode="json"), key=key, output=None,
                         seconds=None, error=None, review_note=None, quality=None)
    lifecycle.append_event(conn, render_id, kind, event)
    if row.options is not None:  # a service render: its workers restitch it
        queue.dispatch(settings, render_id, key)
    return lifecycle.describe(conn, render_id, settings.public_url)


def requeue(db: Database, settings: Settings, tenant: str | None, render_id: str, *,
            operator: bool = False) -> dict[str, Any]:
    """Send an unfinished service render to the workers again: after its task messages
    were lost (a Redis flushed or restored from an old copy). Nothing is paid twice: its
    calls and stored clips carry on from where they are."""
    with db.write() as conn:
        row = _row(conn, tenant, render_id, operator, lock=True)
        if row.options is None or row.status not in lifecycle.ACTIVE:
            raise StateError(f"render {render_id} is {row.status}: only a service render that "
                             "is queued, rendering or stitching can be requeued")
        lifecycle.append_event(conn, render_id, "requeue", {"reason": "operator"})
        queue.dispatch(settings, render_id, row.key, resume=True)
        return lifecycle.describe(conn, render_id, settings.public_url)


def _check_reroll(req: RerollRequest, n_shots: int) -> list[int]:
    chosen = sorted(set(req.shots))
    if bad := [n for n in chosen if not 1 <= n <= n_shots]:
        raise BriefError(f"no shot {bad[0]}: this render has shots 1 to {n_shots}")
    if extra := sorted(set(req.prompts) - set(chosen)):
        raise BriefError(f"a new prompt was given for shot {extra[0]}, which is not re-rolled: "
                         "list it in `shots` too")
    for n, prompt in req.prompts.items():
        if not prompt.strip() or len(prompt) > MAX_PROMPT:
            raise BriefError(f"the new prompt for shot {n} must have 1 to {MAX_PROMPT} characters")
    return chosen


async def cancel(db: Database, settings: Settings, table: ModelTable, tenant: str | None,
                 render_id: str, *, operator: bool = False) -> dict[str, Any]:
    """Stop a render, drop its queued tasks, and cancel its vendor jobs that no other live
    render shares."""
    view = await asyncio.to_thread(
        _act, db, tenant, render_id, "cancelled", "cancelled",
        allowed="queued, rendering or stitching", base_url=settings.public_url,
        operator=operator)
    try:
        await asyncio.to_thread(queue.revoke, settings, render_id)
    except Exception:  # the tasks see the render is cancelled and stop by themselves
        log.warning("could not revoke the queued tasks of render %s", render_id, exc_info=True)
    await cancel_vendor_jobs(db, settings, table, render_id)
    return view


async def cancel_vendor_jobs(db: Database, settings: Settings, table: ModelTable,
                             render_id: str) -> int:
    """Ask vendors to stop this render's jobs; the keys become free to submit again."""
    jobs_ = await asyncio.to_thread(_jobs_to_cancel, db, render_id)
    cancelled = 0
    for name in {call.provider for call in jobs_}:
        provider = load_provider(name, settings)  # one client per vendor, not per job
        try:
            for call in (c for c in jobs_ if c.provider == name):
                try:
                    cancelled += bool(await provider.cancel(JobRef.from_json(call.job)))
                except ProviderError as exc:  # the job may run on; its result is not used
                    log.warning("could not cancel job %s at %s: %s", call.job.get("job_id"),
                                name, exc)
                await asyncio.to_thread(_cancelled, db, call.key)
        finally:
            await provider.aclose()
    return cancelled


def _jobs_to_cancel(db: Database, render_id: str) -> list[Any]:
    """The submitted calls of this render that no other live render shares."""
    with db.read() as conn:
        keys = [r.key for r in conn.execute(sa.select(render_shots.c.key)
                                            .where(render_shots.c.render_id == render_id))]
        shared = {r.key for r in conn.execute(
            sa.select(render_shots.c.key).join(renders, renders.c.id == render_shots.c.render_id)
            .where(render_shots.c.key.in_(keys), renders.c.id != render_id,
                   renders.c.status.in_(lifecycle.ACTIVE)))}
        return [r for r in conn.execute(sa.select(calls).where(
            calls.c.key.in_(keys), calls.c.state == "submitted")) if r.key not in shared]


def _cancelled(db: Database, key: str) -> None:
    with db.write() as conn:
        done = conn.execute(calls.update().where(calls.c.key == key, calls.c.state == "submitted")
                            .values(state="failed", error="cancelled by the user")).rowcount
        if done:
            slots.release(conn, key)
