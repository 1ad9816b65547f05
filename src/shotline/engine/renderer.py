"""Running the shots of a plan: cache, singleflight, retries, download, probe, stitch.

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
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from ..store.cache import Store, copy_atomic
from ..store.db import Database, renders
from . import media

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


def request_for(plan: Plan, shot: PlannedShot, caps: Capabilities) -> ShotRequest:
    """The provider call for one planned shot; its key covers every input that matters."""
    fps = plan.fps if plan.fps in caps.fps else caps.default_fps
    return ShotRequest(
        model=caps.model, wire_model=caps.wire_model, prompt=shot.prompt, seconds=shot.seconds,
        size=plan.size, fps=fps, audio=shot.audio, seed=plan.seed, take=shot.take,
        key=planned_key(plan, shot, caps), index=shot.index,
    )


def stitch_settings(plan: Plan, fit: str) -> dict[str, object]:
    return {
        "size": plan.size, "fps": plan.fps, "audio": plan.audio, "fit": fit,
        "crossfade_frames": plan.crossfade_frames, "frames": [s.frames for s in plan.shots],
    }


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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


def _reopen(job: RenderJob, plan: Plan, key: str, requests: list[ShotRequest],
            stored: dict[str, Any]) -> RenderResult:
    shots = [ShotResult(r.index, r.key, cached=True) for r in requests]
    output, poster, sheet = _deliver(Path(stored["path"]), job.output)
    return RenderResult(
        render_id=stored["render_id"], output=output, seconds=stored["seconds"],
        cost_usd=Decimal(0), shots=shots, poster=poster, contact_sheet=sheet, key=key,
        plan=plan, reopened=True)


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
    """Render every shot of ``plan``, stitch, verify, store, and settle the money."""
    requests = [request_for(plan, s, job.caps) for s in plan.shots]
    key = render_key([r.key for r in requests], stitch_settings(plan, job.settings.fit))
    if job.render_id is None and (stored := job.store.output(key)) is not None:
        return _reopen(job, plan, key, requests, stored)
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
    shots = list(await asyncio.gather(*(renderer.run_shot(r) for r in requests)))
    this_run = sum((s.cost_usd for s in shots), Decimal(0))
    if failed := [s for s in shots if s.error]:
        message = "; ".join(s.error or "" for s in failed) + (
            f" ({sum(1 for s in shots if s.clip)} of {len(shots)} clips are stored and will "
            "not be paid for again)")
        _move(job, render_id, "failed", error=message, settle=True)
        if any(s.over_budget for s in failed):
            raise BudgetError(f"render {render_id} stopped: {message}")
        raise RenderFailed(message, render_id, shots)
    result = await _stitch(plan, job, render_id, key, shots, this_run)
    result.estimate_usd = todo
    return result


def _limits(conn: Connection, job: RenderJob, render_id: str) -> ledger.Limits:
    """The caps on this render: its own (max_usd), its tenant's, and the operator's."""
    row = conn.execute(sa.select(renders.c.tenant_id, renders.c.max_usd)
                       .where(renders.c.id == render_id)).one()
    return ledger.limits(conn, tenant=row.tenant_id, per_render=row.max_usd,
                         daily=job.settings.daily_budget_usd,
                         monthly=job.settings.monthly_budget_usd)


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
                  shots: list[ShotResult], cost: Decimal) -> RenderResult:
    _move(job, render_id, "stitching")
    job.listener(ShotEvent(-1, "stitching"))
    started = time.monotonic()
    also = None
    if (stored := job.store.output(key)) is not None:  # made before, by a twin render
        output, seconds = Path(stored["path"]), float(stored["seconds"])
    else:
        output = job.store.output_path(key)
        output.parent.mkdir(parents=True, exist_ok=True)
        segments = [media.Segment(s.clip, p.frames)
                    for s, p in zip(shots, plan.shots, strict=True) if s.clip is not None]
        probe = await asyncio.to_thread(
            media.stitch, segments, output, size=parse_size(plan.size), fps=plan.fps,
            audio=plan.audio, fit=job.settings.fit, crossfade_frames=plan.crossfade_frames)
        await asyncio.to_thread(_stills, output, plan)
        seconds = probe.duration
        checkpoint("stitched")

        def also(conn: Connection) -> None:
            job.store.put_output(conn, key, output, seconds, render_id)

    job.listener(ShotEvent(-1, "stitched", message=f"{time.monotonic() - started:.1f} s"))
    _move(job, render_id, "awaiting_review", settle=True, also=also, output=str(output),
          seconds=seconds)
    final, poster, sheet = _deliver(output, job.output)
    return RenderResult(
        render_id=render_id, output=final, seconds=seconds, cost_usd=cost, shots=shots,
        poster=poster, contact_sheet=sheet, key=key, plan=plan)


def _stills(output: Path, plan: Plan) -> None:
    """A poster frame and a contact sheet with one frame from the middle of each shot."""
    media.poster(output, _still(output, "poster"))
    times, start = [], 0.0
    overlap = plan.crossfade_frames / plan.fps
    for shot in plan.shots:
        times.append(start + shot.use_seconds / 2)
        start += shot.use_seconds - overlap
    media.contact_sheet(output, _still(output, "contact"), times=times)
