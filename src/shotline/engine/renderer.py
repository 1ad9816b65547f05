"""Running the shots of a plan: cache, singleflight, retries, download, probe, segment, join.

Invariants (see also calls.py for the recovery points and ledger.py for money):

* A shot whose key is stored is served from the store: no provider call, cost 0.
* Shots run concurrently, at most ``settings.limit_for(provider)`` in flight per provider.
* Only ``RetryableError`` is retried, with exponential backoff and jitter, honouring the
  vendor's Retry-After, under ``max_attempts`` and the per-shot deadline.
* A submit whose outcome is unknown (``AmbiguousSubmitError``, or a claim left by a
  killed process) is reconciled with the provider, never resubmitted blindly.
* A clip is probed before it takes its content-key name; its ledger row, its store row
  and its ``done`` state are committed together.
* Before every submit, the render's reservation must cover what it has billed plus one
  attempt at every shot still open (the one about to be submitted included); if not, it
  is grown under every cap or the shot stops with ``BudgetError``. So a retry on a model
  that bills failed attempts, a resumed render or a re-roll can never bill past a cap.
* A permanent failure fails the render with the vendor's reason after the other shots
  have settled (they are being paid for; their clips are kept for the next run).
* Each clip is made into its segment (:mod:`.assembly`) as soon as it is stored, while the
  other shots still render; once all are there the output is joined by copy. Segments are
  kept by key, so a resumed render or a re-roll makes only what is new.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.capabilities import Capabilities, parse_size
from ..core.keys import planned_key, render_key
from ..core.planner import Plan, PlannedShot
from ..core.pricing import ShotCost, call_cost
from ..errors import (
    AmbiguousSubmitError,
    BudgetError,
    MediaError,
    PermanentError,
    ProviderError,
    RetryableError,
    ShotlineError,
    UserError,
)
from ..providers.base import JobRef, JobStatus, Provider, ShotRequest
from ..settings import Settings
from ..store import calls, ledger, lifecycle
from ..store import images as stored_images
from ..store.cache import Store, copy_atomic
from ..store.db import Database, renders
from . import inputs, media, quality
from .assembly import Assembly, Prepared
from .normalise import Format

ShotState = Literal["queued", "submitting", "rendering", "downloading", "done", "cached", "failed"]


@dataclass(frozen=True)
class ShotEvent:
    """Progress of one shot (index -1 is the stitch), for live displays and logs."""

    index: int
    state: ShotState | Literal["stitching", "stitched"]
    progress: float | None = None
    message: str = ""


@dataclass
class ShotResult:
    index: int
    key: str
    clip: Path | None = None
    cached: bool = False
    cost_usd: Decimal = Decimal(0)
    job_id: str | None = None
    error: str | None = None
    over_budget: bool = False  # stopped before an attempt the budget could not cover
    segment: Prepared | None = None
    flags: list[quality.Flag] = field(default_factory=list)
    retake: int | None = None  # the take the quality gate's automatic re-roll made


@dataclass
class RenderResult:
    render_id: str
    output: Path
    seconds: float
    cost_usd: Decimal
    shots: list[ShotResult]
    poster: Path
    contact_sheet: Path
    key: str
    plan: Plan
    estimate_usd: Decimal = Decimal(0)
    reopened: bool = False
    flags: list[quality.Flag] = field(default_factory=list)  # the output's quality flags


class RenderStopped(ShotlineError):
    """The render was cancelled, or another worker took it over, while this one ran it."""

    exit_code = 4


class RenderFailed(ShotlineError):
    """One or more shots failed; ``shots`` holds every shot, including the kept clips."""

    exit_code = 4

    def __init__(self, message: str, render_id: str, shots: list[ShotResult]) -> None:
        super().__init__(message)
        self.render_id = render_id
        self.shots = shots


Listener = Callable[[ShotEvent], None]


def _noop(_: ShotEvent) -> None:
    return None


def checkpoint(name: str) -> None:
    """A recovery point (``claimed``, ``submitted-uncommitted``, ``submitted``,
    ``downloaded``, ``done``, ``stitched``). Does nothing: the crash tests replace it in the
    process they start (tests/killpoint.py) to kill that process right here."""


def request_for(plan: Plan, shot: PlannedShot, caps: Capabilities,
                images: Mapping[str, bytes] | None = None) -> ShotRequest:
    """The provider call for one planned shot; its key covers every input that matters.

    ``images`` holds the bytes of the plan's input images by hash; without it the request
    carries none of them, and serves for its key and price only, never to be sent.
    """
    fps = plan.fps if plan.fps in caps.fps else caps.default_fps
    return ShotRequest(
        model=caps.model, wire_model=caps.wire_model, prompt=shot.prompt, seconds=shot.seconds,
        size=plan.size, fps=fps, audio=shot.audio, seed=plan.seed, take=shot.take,
        key=planned_key(plan, shot, caps), index=shot.index, cast=shot.cast,
        **(inputs.for_shot(plan, shot, images) if images is not None else {}),
    )


def loudness_target(settings: Settings, asked: bool | None = None) -> float | None:
    """The LUFS every shot is brought to, or None to keep each clip's own level."""
    return settings.loudness_target if (settings.loudness if asked is None else asked) else None


def stitch_settings(plan: Plan, settings: Settings, loudness: float | None) -> dict[str, object]:
    """Everything besides the shots that changes the stitched output (part of the render key)."""
    return {
        "size": plan.size, "fps": plan.fps, "audio": plan.audio, "fit": settings.fit,
        "crossfade_frames": plan.crossfade_frames, "frames": [s.frames for s in plan.shots],
        "loudness": loudness, "true_peak": settings.true_peak if loudness is not None else None,
        "preset": settings.encode_preset,
    }


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
def assembly_for(plan: Plan, settings: Settings, store: Store, loudness: float | None) -> Assembly:
    fmt = Format(size=parse_size(plan.size), fps=plan.fps, audio=plan.audio, fit=settings.fit,
                 preset=settings.encode_preset)
    return Assembly([s.frames for s in plan.shots], fmt, store.pieces(),
                    crossfade=plan.crossfade_frames, loudness=loudness,
                    true_peak=settings.true_peak, encoders=settings.normalise_concurrency)


def backoff(attempt: int, base: float, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never shorter than the vendor's Retry-After."""
    delay: float = base * (2**attempt) * random.uniform(0.5, 1.5)
    return max(delay, retry_after or 0.0)


class Renderer:
    """Makes the clips of one render through one provider."""

    def __init__(self, provider: Provider, caps: Capabilities, settings: Settings,
                 db: Database, store: Store, render_id: str, listener: Listener,
                 limits: ledger.Limits) -> None:
        self.provider = provider
        self.caps = caps
        self.settings = settings
        self.db = db
        self.store = store
        self.render_id = render_id
        self.emit = listener
        self.limit = asyncio.Semaphore(settings.limit_for(caps.provider))
        self.owner = calls.new_owner()
        # Two shots of one brief can be identical (same key): the second waits for the first.
        self.key_locks: dict[str, asyncio.Lock] = {}
        self.limits = limits
        # What one more attempt at each shot not finished yet would cost: with what the
        # render has billed, the least its reservation must cover before any submit.
        self.open: dict[int, Decimal] = {}

    def expect(self, requests: list[ShotRequest]) -> None:
        """Note the shots this run will make, before any of them starts."""
        for r in requests:
            self.open[r.index] = call_cost(self.caps, r.seconds, r.size, r.audio).cost_usd

    def allow_retake(self, index: int, cost: Decimal) -> None:
        """Reserve one more try at shot ``index`` (the quality gate's automatic re-roll), or
        raise BudgetError if the caps cannot cover it; nothing is spent here."""
        with self.db.write() as conn:
            need = ledger.billed(conn, self.render_id) + sum(self.open.values(), cost)
            ledger.reserve(conn, self.render_id, need, self.limits, grow_only=True)
        self.open[index] = cost

    async def run_shot(self, request: ShotRequest) -> ShotResult:
        async with self.key_locks.setdefault(request.key, asyncio.Lock()):
            return await self._run_shot(request)

    async def _run_shot(self, request: ShotRequest) -> ShotResult:
        result = ShotResult(request.index, request.key)
        cost = call_cost(self.caps, request.seconds, request.size, request.audio)
        if self._serve_stored(result, cost):
            return result
        async with self.limit:
            try:
                await asyncio.wait_for(self._make(request, result, cost),
                                       self.settings.render_deadline)
            except TimeoutError:
                result.error = (
                    f"did not finish within {self.settings.render_deadline:g} s (job "
                    f"{result.job_id}); the job was left with the provider, not resubmitted")
            except ProviderError as exc:  # the vendor's own words go to the user
                result.error = str(exc) if exc.reason in str(exc) else f"{exc} ({exc.reason})"
            except BudgetError as exc:
                result.error, result.over_budget = str(exc), True
            except (MediaError, UserError) as exc:
                result.error = str(exc)
        self.open.pop(request.index, None)
        state = "failed" if result.error else ("cached" if result.cached else "done")
        # A shot served from the store keeps what it cost when this render paid for it.
        paid = {} if result.cached else {"cost_usd": result.cost_usd}
        with self.db.write() as conn:
            lifecycle.set_shot(conn, self.render_id, request.index, state=state, cached=result.cached,
                          error=result.error, progress=None if result.error else 1.0, **paid)
        if result.error:
            result.error = f"shot {request.index + 1}: {result.error}"
            self.emit(ShotEvent(request.index, "failed", message=result.error))
        return result

    def _serve_stored(self, result: ShotResult, cost: ShotCost) -> bool:
        stored = self.store.clip(result.key)
        if stored is None:
            return False
        self.open.pop(result.index, None)
        result.clip, result.cached = stored.path, True
        with self.db.write() as conn:
            self.store.touch(conn, result.key)
            lifecycle.set_shot(conn, self.render_id, result.index, state="cached", cached=True)
            ledger.record_saving(conn, self.render_id, result.key, self.caps.provider,
                                 self.caps.model, cost.cost_usd)
        self.emit(ShotEvent(result.index, "cached"))
        return True

    async def _make(self, request: ShotRequest, result: ShotResult, cost: ShotCost) -> None:
        """Claim, submit or follow, poll, download, store: until done or out of attempts."""
        while True:
            with self.db.write() as conn:
                c = calls.claim(conn, request.key, self.caps.provider, self.caps.model, self.owner)
            ref: JobRef | None
            if c.action == "wait":  # another process is submitting this very shot
                self.emit(ShotEvent(request.index, "queued", message="shared with another render"))
                await asyncio.sleep(0.2)
                continue
            if c.action == "done":
                if self._serve_stored(result, cost):
                    return
                # Made before, but the file was pruned since: making it again is a new call.
                calls.set_call(self.db, request.key, "failed", error="clip no longer stored")
                continue
            if c.action == "reconcile":  # a claim whose owner died: submitted or not?
                ref = await self._reconcile(request, c.since)
            elif c.action == "lead":
                ref = await self._submit(request, c.attempts)
            else:
                assert c.job is not None
                ref = JobRef.from_json(c.job)
            if ref is None:
                continue  # nothing is in flight for this key: claim it again
            result.job_id = ref.job_id
            if await self._finish(ref, request, result, cost, c.attempts):
                return

    def _authorize(self, request: ShotRequest) -> None:
        """Make sure the reservation covers this submit, growing it within every cap.

        Raises BudgetError (and frees the claim) if it cannot: the attempts already made
        stay in the ledger and the clips already made stay stored.
        """
        try:
            with self.db.write() as conn:
                need = ledger.billed(conn, self.render_id) + sum(self.open.values(), Decimal(0))
                ledger.reserve(conn, self.render_id, need, self.limits, grow_only=True)
        except BudgetError as exc:
            calls.set_call(self.db, request.key, "failed", error="stopped by the budget")
            raise BudgetError(f"stopped before an attempt that could be billed: {exc}") from None

    async def _submit(self, request: ShotRequest, attempt: int) -> JobRef | None:
        self._authorize(request)
        checkpoint("claimed")
        self.emit(ShotEvent(request.index, "submitting"))
        sent_at = time.time()
        try:
            ref = await self.provider.submit(request)
        except AmbiguousSubmitError:
            return await self._reconcile(request, sent_at)
        except RetryableError as exc:
            await self._failed_attempt(request, attempt, exc.reason, exc.retry_after)
            return None
        except PermanentError as exc:
            calls.set_call(self.db, request.key, "failed", error=exc.reason)
            raise
        except UserError as exc:  # refused before anything was sent: release the claim
            calls.set_call(self.db, request.key, "failed", error=str(exc))
            raise
        checkpoint("submitted-uncommitted")
        calls.set_call(self.db, request.key, "submitted", job=ref.to_json())
        checkpoint("submitted")
        return ref

    async def _reconcile(self, request: ShotRequest, since: float) -> JobRef | None:
        """Ask the provider whether it has a job for this request; never guess.

        ``since`` is no later than the lost submit was sent. Returns the job if it exists,
        None if the provider says it never got one (the key is then free to submit), and
        raises AmbiguousSubmitError, leaving the claim for an operator, if the provider
        cannot be asked or cannot tell.
        """
        name = self.caps.provider
        why = f"this provider has no lookup ({self.provider.lookup})"
        if self.provider.finds_jobs:
            try:
                ref = await self.provider.find(request, since)
            except ShotlineError as exc:  # could not ask, or no answer: leave it, never guess
                why = f"the lookup could not tell ({exc})"
            else:
                if ref is None:
                    calls.set_call(self.db, request.key, "failed", error="not found at the provider")
                    return None
                calls.set_call(self.db, request.key, "submitted", job=ref.to_json())
                return ref
        # Left unowned, so the next run reconciles it (from the same time) instead of
        # waiting on this process or submitting again.
        calls.set_call(self.db, request.key, "submitting", error="ambiguous submit",
                      heartbeat=since, owner=None)
        raise AmbiguousSubmitError(
            f"a submit for this shot may have reached {name} but its answer was lost, and "
            f"{why}. It was not resubmitted, to avoid paying twice: check {name}'s dashboard "
            f"for a job made from this shot's prompt after {_utc(since)} (shot key "
            f"{request.key}); run the render again to look again, or render with a new "
            "--take to make this shot anew and pay again")

    async def _failed_attempt(self, request: ShotRequest, attempt: int, reason: str,
                              retry_after: float | None) -> None:
        calls.set_call(self.db, request.key, "failed", error=reason)
        if attempt >= self.settings.max_attempts:
            raise PermanentError(f"gave up after {attempt} attempts: {reason}", reason=reason)
        delay = backoff(attempt - 1, self.settings.backoff_base, retry_after)
        self.emit(ShotEvent(request.index, "queued", message=f"retry in {delay:.1f} s: {reason}"))
        await asyncio.sleep(delay)

    async def _finish(self, ref: JobRef, request: ShotRequest, result: ShotResult,
                      cost: ShotCost, attempt: int) -> bool:
        status = await self._wait(ref, request.index)
        if status.state == "failed":
            reason = status.error or "the provider reported a failed job"
            if self.caps.billed_on_failure:
                with self.db.write() as conn:
                    ledger.record(conn, self._charge(ref, request, cost, status, "failed"))
            if not status.retryable:
                calls.set_call(self.db, request.key, "failed", error=reason)
                raise PermanentError(f"job {ref.job_id} failed: {reason}", reason=reason)
            await self._failed_attempt(request, attempt, reason, None)
            return False
        self.emit(ShotEvent(request.index, "downloading"))
        try:
            tmp, seconds = await self._download(ref, request)
        except (MediaError, ProviderError):
            # The vendor made (and billed) the clip even if we could not fetch it. The call
            # stays 'submitted', so a later run tries this job's file again for free.
            with self.db.write() as conn:
                ledger.record(conn, self._charge(ref, request, cost, status, "undelivered"))
            raise
        checkpoint("downloaded")
        try:
            with self.db.write() as conn:
                result.clip = self.store.put_clip(conn, request.key, tmp, seconds=seconds,
                                                  provider=self.caps.provider,
                                                  model=self.caps.model, cost_usd=cost.cost_usd)
                paid = ledger.record(conn, self._charge(ref, request, cost, status, "succeeded"))
                calls.set_call_in(conn, request.key, "done")
        finally:
            tmp.unlink(missing_ok=True)  # moved into place, or not wanted: never left behind
        checkpoint("done")
        result.cost_usd = cost.cost_usd if paid else Decimal(0)
        result.cached = not paid  # another render's call, shared: no charge here
        self.emit(ShotEvent(request.index, "done"))
        return True

    def _charge(self, ref: JobRef, request: ShotRequest, cost: ShotCost, status: JobStatus,
                outcome: str) -> ledger.Charge:
        seconds = cost.billed_seconds
        if status.billed_seconds is not None:  # what the vendor says it billed wins
            seconds = int(-(-status.billed_seconds // 1))
        return ledger.Charge(
            render_id=self.render_id, shot_key=request.key, provider=self.caps.provider,
            model=self.caps.model, provider_job_id=ref.job_id, seconds_billed=seconds,
            audio=request.audio, unit_price=cost.unit_price, amount=cost.unit_price * seconds,
            outcome=outcome)

    async def _wait(self, ref: JobRef, index: int) -> JobStatus:
        while True:
            try:
                status = await self.provider.poll(ref)
            except RetryableError as exc:  # a dropped poll costs nothing: just poll again
                await asyncio.sleep(backoff(0, self.settings.poll_interval, exc.retry_after))
                continue
            if status.state in ("succeeded", "failed"):
                return status
            self.emit(ShotEvent(index, "rendering", status.progress))
            await asyncio.sleep(status.next_poll or self.settings.poll_interval)

    async def _download(self, ref: JobRef, request: ShotRequest) -> tuple[Path, float]:
        """Download to a temporary name and probe it; vendor URLs expire, so fetch now."""
        tmp = self.store.temp_path(self.store.clip_path(request.key), ref.job_id)
        last: Exception | None = None
        try:
            for _ in range(2):  # CDNs drop connections; a second fetch is free, a resubmit is not
                try:
                    await self.provider.download(ref, tmp)
                    clip = await asyncio.to_thread(media.probe, tmp)
                except (MediaError, RetryableError) as exc:
                    last = exc
                    continue
                if clip.duration + 1 / request.fps >= request.seconds * 0.5:
                    return tmp, clip.duration
                last = MediaError(f"clip is {clip.duration:.2f} s, asked for {request.seconds} s")
        except BaseException:  # any failure, a cancel included: no partial file stays behind
            tmp.unlink(missing_ok=True)
            raise
        tmp.unlink(missing_ok=True)
        raise MediaError(f"job {ref.job_id} returned an unusable file: {last}")


@dataclass
class RenderJob:
    """Everything render_plan needs besides the plan."""

    caps: Capabilities
    provider: Provider
    settings: Settings
    db: Database
    store: Store
    brief_text: str = ""
    output: Path | None = None
    max_usd: Decimal | None = None
    listener: Listener = _noop
    # Set when a worker runs a render the service queued: the row, its reservation and
    # its budget checks exist already, and ``owner`` is the worker's lease (for fencing).
    render_id: str | None = None
    owner: str | None = None
    base_url: str = ""
    loudness: bool | None = None  # None: settings.loudness
    # The bytes of the plan's input images by hash, as just read from the brief (stored
    # with a new render); any not given are read from the store (a queued or resumed render).
    images: dict[str, bytes] = field(default_factory=dict)

    @property
    def target(self) -> float | None:
        return loudness_target(self.settings, self.loudness)


def _reopen(job: RenderJob, plan: Plan, key: str, requests: list[ShotRequest],
            stored: dict[str, Any]) -> RenderResult:
    shots = [ShotResult(r.index, r.key, cached=True) for r in requests]
    output, poster, sheet = _deliver(Path(stored["path"]), job.output)
    with job.db.read() as conn:
        flags = _output_flags(conn, stored["render_id"])
    return RenderResult(
        render_id=stored["render_id"], output=output, seconds=stored["seconds"],
        cost_usd=Decimal(0), shots=shots, poster=poster, contact_sheet=sheet, key=key,
        plan=plan, reopened=True, flags=flags)


def _output_flags(conn: Connection, render_id: str) -> list[quality.Flag]:
    """The quality flags recorded on a render's output."""
    return [quality.Flag.from_json(f) for f in lifecycle.output_quality(conn, render_id)]


def _still(output: Path, kind: str) -> Path:
    return output.with_name(f"{output.stem}.{kind}.jpg")


def _deliver(stored: Path, dest: Path | None) -> tuple[Path, Path, Path]:
    """Copy a stored output and its stills to where the user asked, if anywhere."""
    if dest is None:
        return stored, _still(stored, "poster"), _still(stored, "contact")
    for kind in ("poster", "contact"):
        copy_atomic(_still(stored, kind), _still(dest, kind))
    return copy_atomic(stored, dest), _still(dest, "poster"), _still(dest, "contact")


async def render_plan(plan: Plan, job: RenderJob) -> RenderResult:
    """Render every shot of ``plan``, segment each as it arrives, join, verify, store, settle."""
    blobs = inputs.gather(job.db, plan, job.images)
    requests = [request_for(plan, s, job.caps, blobs) for s in plan.shots]
    key = render_key([r.key for r in requests], stitch_settings(plan, job.settings, job.target))
    if job.render_id is None and (stored := job.store.output(key)) is not None:
        return _reopen(job, plan, key, requests, stored)
    assembly = assembly_for(plan, job.settings, job.store, job.target)  # bad settings: nothing written
    costs = [call_cost(job.caps, r.seconds, r.size, r.audio).cost_usd for r in requests]
    to_make = [r for r in requests if not job.store.clip(r.key)]
    todo = sum((c for r, c in zip(requests, costs, strict=True) if r in to_make), Decimal(0))
    for request in requests:  # a missing key is found before anything is written
        job.provider.preflight(request)
    if job.render_id is None:
        with job.db.write() as conn:  # a refused budget rolls this back: nothing is written
            # The estimate is what this run will pay: the shots not stored (the same
            # figure `shotline estimate` shows), and it is what is reserved, on top of
            # what a resumed render billed before.
            stored_images.put(conn, plan.images(), blobs)
            render_id = lifecycle.open_render(conn, key, plan.model, job.brief_text,
                                              plan.model_dump(mode="json"),
                                              [r.key for r in requests], todo,
                                              max_usd=job.max_usd)
            limits = _limits(conn, job, render_id)
            ledger.reserve(conn, render_id, ledger.billed(conn, render_id) + todo, limits)
    else:
        render_id = job.render_id
        with job.db.read() as conn:
            limits = _limits(conn, job, render_id)
        _move(job, render_id, "rendering")
    renderer = Renderer(job.provider, job.caps, job.settings, job.db, job.store, render_id,
                        job.listener, limits)
    renderer.expect(to_make)

    async def shot(request: ShotRequest) -> ShotResult:
        result = await _shot(renderer, assembly, request)
        if job.settings.quality_reroll and result.segment and quality.failing(result.flags):
            return await _retake(job, plan, renderer, assembly, request, result, blobs)
        return result

    shots = list(await asyncio.gather(*(shot(r) for r in requests)))
    this_run = sum((s.cost_usd for s in shots), Decimal(0))
    if failed := [s for s in shots if s.error]:
        message = "; ".join(s.error or "" for s in failed) + (
            f" ({sum(1 for s in shots if s.clip)} of {len(shots)} clips are stored and will "
            "not be paid for again)")
        _move(job, render_id, "failed", error=message, settle=True)
        if any(s.over_budget for s in failed):
            raise BudgetError(f"render {render_id} stopped: {message}")
        raise RenderFailed(message, render_id, shots)
    if any(s.retake for s in shots):
        plan, key = _retaken(job, plan, render_id, shots)
    result = await _stitch(plan, job, render_id, key, shots, this_run, assembly)
    result.estimate_usd = todo
    return result


def _limits(conn: Connection, job: RenderJob, render_id: str) -> ledger.Limits:
    """The caps on this render: its own (max_usd), its tenant's, and the operator's."""
    row = conn.execute(sa.select(renders.c.tenant_id, renders.c.max_usd)
                       .where(renders.c.id == render_id)).one()
    return ledger.limits(conn, tenant=row.tenant_id, per_render=row.max_usd,
                         daily=job.settings.daily_budget_usd,
                         monthly=job.settings.monthly_budget_usd)


async def _retake(job: RenderJob, plan: Plan, renderer: Renderer, assembly: Assembly,
                  request: ShotRequest, first: ShotResult, blobs: Mapping[str, bytes],
                  ) -> ShotResult:
    """The quality gate failed a shot: render it once more as a new take, if the budget allows,
    and keep that take unless it fails more checks than the first."""
    shot = plan.shots[request.index]
    again = request_for(plan, shot.model_copy(update={"take": shot.take + 1}), job.caps, blobs)
    cost = call_cost(job.caps, again.seconds, again.size, again.audio).cost_usd
    try:
        renderer.allow_retake(request.index, cost)
    except BudgetError as exc:
        renderer.emit(ShotEvent(request.index, "done", message=f"not re-rolled: {exc}"))
        return first
    why = "; ".join(f.message for f in quality.failing(first.flags))
    renderer.emit(ShotEvent(request.index, "queued",
                            message=f"re-rolling as take {again.take}: {why}"))
    second = await _shot(renderer, assembly, again)
    keep = second.error is None and second.segment is not None and \
        len(quality.failing(second.flags)) <= len(quality.failing(first.flags))
    chosen, other = (second, first) if keep else (first, second)
    chosen.cost_usd += other.cost_usd  # both takes were paid for
    chosen.retake = again.take if keep else None
    with job.db.write() as conn:  # the shot's row shows the take kept, and what both cost
        lifecycle.set_shot(conn, renderer.render_id, request.index, key=chosen.key,
                           state="cached" if chosen.cached else "done",
                           error=None, cost_usd=ledger.shot_billed(conn, renderer.render_id,
                                                                   [first.key, second.key]),
                           quality=[f.to_json() for f in chosen.flags])
    return chosen


def _retaken(job: RenderJob, plan: Plan, render_id: str,
             shots: list[ShotResult]) -> tuple[Plan, str]:
    """The plan and render key with the takes the automatic re-roll kept, recorded."""
    updated = tuple(p.model_copy(update={"take": s.retake}) if s.retake else p
                    for p, s in zip(plan.shots, shots, strict=True))
    plan = plan.model_copy(update={"shots": updated})
    requests = [request_for(plan, p, job.caps) for p in plan.shots]
    key = render_key([r.key for r in requests], stitch_settings(plan, job.settings, job.target))
    with job.db.write() as conn:
        lifecycle.set_render(conn, render_id, plan=plan.model_dump(mode="json"), key=key)
    return plan, key


async def _shot(renderer: Renderer, assembly: Assembly, request: ShotRequest) -> ShotResult:
    """One shot from request to segment: the segment is made while other shots still render."""
    result = await renderer.run_shot(request)
    if result.clip is None or result.error:
        return result
    try:
        result.segment = await asyncio.to_thread(
            assembly.prepare, request.index, result.clip, request.key, asked=request.seconds)
    except MediaError as exc:
        result.error = f"shot {request.index + 1}: {exc}"
        return result
    result.flags = list(result.segment.flags)
    with renderer.db.write() as conn:
        lifecycle.set_shot(conn, renderer.render_id, request.index,
                           quality=[f.to_json() for f in result.flags])
    renderer.emit(ShotEvent(request.index, "cached" if result.cached else "done",
                            message="segment ready"))
    return result


def _move(job: RenderJob, render_id: str, status: str, *, settle: bool = False,
          also: Callable[[Connection], None] | None = None, **values: Any) -> None:
    """Change state (the render's cost is always what the ledger holds for it)."""
    with job.db.write() as conn:
        if also is not None:  # committed with the state change, or not at all
            also(conn)
        values["cost_usd"] = ledger.billed(conn, render_id)
        moved = lifecycle.transition(conn, render_id, status, owner=job.owner,
                                     base_url=job.base_url, **values)
        if not moved and job.owner is None:
            # Library and CLI runs hold no lease, and several of them may share one
            # render row (each resumes the same unfinished render): the last word wins,
            # unless somebody cancelled the render or reviewed it already.
            moved = lifecycle.finish_shared(conn, render_id, status, **values)
        if settle or not moved:
            ledger.settle(conn, render_id)
    if not moved:
        raise RenderStopped(f"render {render_id} was cancelled or taken over by another worker")


async def _stitch(plan: Plan, job: RenderJob, render_id: str, key: str,
                  shots: list[ShotResult], cost: Decimal, assembly: Assembly) -> RenderResult:
    _move(job, render_id, "stitching")
    job.listener(ShotEvent(-1, "stitching"))
    started = time.monotonic()
    also = None
    flags: list[quality.Flag]
    if (stored := job.store.output(key)) is not None:  # made before, by a twin render
        output, seconds = Path(stored["path"]), float(stored["seconds"])
        with job.db.read() as conn:
            flags = _output_flags(conn, stored["render_id"])
    else:
        output = job.store.output_path(key)
        segments = [s.segment for s in shots if s.segment is not None]
        joined = await asyncio.to_thread(assembly.join, segments, output)
        job.listener(ShotEvent(-1, "stitched", message=f"{time.monotonic() - started:.2f} s"))
        await asyncio.to_thread(_stills, output, segments)
        seconds, flags = joined.probe.duration, list(joined.flags)
        checkpoint("stitched")

        def also(conn: Connection) -> None:
            job.store.put_output(conn, key, output, seconds, render_id)

    _move(job, render_id, "awaiting_review", settle=True, also=also, output=str(output),
          seconds=seconds, quality=[f.to_json() for f in flags])
    final, poster, sheet = _deliver(output, job.output)
    return RenderResult(
        render_id=render_id, output=final, seconds=seconds, cost_usd=cost, shots=shots,
        poster=poster, contact_sheet=sheet, key=key, plan=plan, flags=flags)


def _stills(output: Path, segments: list[Prepared]) -> None:
    """A poster frame a third of the way in, and a contact sheet of each shot's middle frame."""
    media.poster(output, _still(output, "poster"))
    media.tile([s.thumb for s in segments if s.thumb is not None], _still(output, "contact"))
