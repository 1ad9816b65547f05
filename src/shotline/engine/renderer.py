"""Running the shots of a plan: cache, singleflight, retries, download, probe, segment, join.

Invariants (see also calls.py for the recovery points and ledger.py for money):

* A shot whose key is stored is served from the store: no provider call, cost 0.
* A shot is made in explicit steps (:class:`Step`: claim, authorize and submit; poll once;
  download, probe, store and bill), each one committed before the next. The inline loop
  (:meth:`Renderer.run_shot`) and the queue's tasks (``service/tasks.py``) take the same
  steps; between two of them a shot is plain data any worker can carry on from.
* Shots run concurrently, at most ``settings.limit_for(provider)`` in flight per provider
  across every worker (leased slots in the database, ``store/slots.py``).
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
  kept by key (on the machine that made them; any other makes them again from the stored
  clip), so a resumed render or a re-roll makes only what is new.
* A continuation (``PlannedShot.continues``, :func:`chain_of`) is claimed only once the
  clip of the shot before is stored: its first frame is the last frame the output shows of
  that clip, cut here (PNG), stored like any input image and sent. Until then it waits
  without holding a provider slot or its deadline; if the shot before failed, it fails too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.brief import ImageRef
from ..core.capabilities import Capabilities, parse_size
from ..core.keys import planned_key, render_key
from ..core.planner import Plan, PlannedShot
from ..core.pricing import call_cost
from ..core.takes import extras, slot_owner
from ..errors import (
    AmbiguousSubmitError,
    BudgetError,
    MediaError,
    PermanentError,
    ProviderError,
    RetryableError,
    ShotlineError,
    StorageError,
    UserError,
)
from ..providers.base import ImageInput, JobRef, JobStatus, Provider, ShotRequest
from ..settings import Settings
from ..store import calls, ledger, lifecycle, slots
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
    stored: str | None = None  # the clip's name in the store (``clip`` is its local file)
    segment: Prepared | None = None
    flags: list[quality.Flag] = field(default_factory=list)
    retake: int | None = None  # the take the quality gate's automatic re-roll made


@dataclass
class RenderResult:
    render_id: str
    output: Path
    seconds: float
    cost_usd: Decimal  # every call of this run: the takes not picked included
    shots: list[ShotResult]  # the shots of the output (a shot with takes: the picked one)
    poster: Path
    contact_sheet: Path
    key: str
    plan: Plan
    estimate_usd: Decimal = Decimal(0)
    reopened: bool = False
    flags: list[quality.Flag] = field(default_factory=list)  # the output's quality flags
    takes: list[ShotResult] = field(default_factory=list)  # the takes not picked (core/takes.py)


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


def chain_of(plan: Plan) -> dict[int, tuple[int, float]]:
    """Each continuation's shot before, and the time in that shot's clip of the last frame
    the output shows of it (the frame the continuation starts from), by shot index."""
    return {s.index: (s.index - 1, (plan.shots[s.index - 1].frames - 1) / plan.fps)
            for s in plan.shots if s.continues}


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
        # Off, every clip is re-encoded: other bytes. (On is the default, left out so that
        # outputs made before the setting existed keep their keys.)
        **({"copy_matching": False} if not settings.copy_matching else {}),
        # The candidates rendered beside the picked takes: a render with takes is not the
        # twin of one without, though its output may be.
        **({"takes": [list(s.takes) for s in plan.shots]} if any(s.takes for s in plan.shots)
           else {}),
    }


def assembly_for(plan: Plan, settings: Settings, store: Store, loudness: float | None) -> Assembly:
    """What makes a plan's segments and joins them (bad encoder settings: refused here)."""
    fmt = Format(size=parse_size(plan.size), fps=plan.fps, audio=plan.audio, fit=settings.fit,
                 preset=settings.encode_preset)
    return Assembly([s.frames for s in plan.shots], fmt, store.pieces(),
                    crossfade=plan.crossfade_frames, loudness=loudness,
                    true_peak=settings.true_peak, encoders=settings.normalise_concurrency,
                    copy_matching=settings.copy_matching)


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def backoff(attempt: int, base: float, retry_after: float | None) -> float:
    """Exponential backoff with jitter, never shorter than the vendor's Retry-After."""
    delay: float = base * (2**attempt) * random.uniform(0.5, 1.5)
    return max(delay, retry_after or 0.0)


StepAction = Literal["claim", "poll", "fetch", "done", "failed"]


@dataclass(frozen=True)
class Step:
    """Where the making of one shot stands between two engine calls, as plain data.

    A shot is made by calling :meth:`Renderer.advance` with the last step until it is
    ``done`` or ``failed``: ``claim`` (serve it from the store, or claim the key and
    authorize and submit, or follow the job another render submitted), ``poll`` (ask once;
    the answer's hint is the next step's ``delay``), ``fetch`` (download, probe, store, bill).
    The inline worker loops over the steps in one coroutine; the queue's tasks carry a step
    from one task to the next (``to_json``), so any worker can take the next one.
    """

    action: StepAction = "claim"
    delay: float = 0.0  # seconds to wait before this action: a poll hint, a backoff
    job: dict[str, Any] | None = None  # the JobRef, from poll on
    attempt: int = 0  # the claim's attempt number, for retries
    started: float = 0.0  # when this run began the shot: the deadline counts from here
    renewed: float = 0.0  # when the shot's provider slot was last renewed
    billed_seconds: float | None = None  # what the finished job said it billed
    error: str | None = None
    over_budget: bool = False
    cached: bool = False
    cost_usd: str = "0"
    waiting: str = ""  # what the shot last said it waits for: each wait is told once

    @property
    def final(self) -> bool:
        return self.action in ("done", "failed")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Step:
        # Fields a newer version added are left out: a message outlives a rolling upgrade.
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


class _Again(Exception):  # control flow inside this module only
    """A transient failure: claim the shot again after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay


class Renderer:
    """Makes the clips of one render through one provider, one step at a time.

    ``requests`` are every shot of the render. ``on_stored`` runs after a clip is stored,
    before its shot is done: the place for per-clip work (normalising a clip as it
    arrives), on whichever worker fetched it. ``chain`` is the plan's :func:`chain_of`.
    """

    def __init__(self, provider: Provider, caps: Capabilities, settings: Settings,
                 db: Database, store: Store, render_id: str, listener: Listener,
                 limits: ledger.Limits, requests: list[ShotRequest],
                 on_stored: Callable[[ShotRequest, str], Awaitable[None]] | None = None,
                 chain: Mapping[int, tuple[int, float]] | None = None) -> None:
        self.provider = provider
        self.caps = caps
        self.settings = settings
        self.db = db
        self.store = store
        self.render_id = render_id
        self.emit = listener
        self.limits = limits
        self.requests = {r.index: r for r in requests}
        self.costs = {r.index: call_cost(caps, r.seconds, r.size, r.audio) for r in requests}
        self.on_stored = on_stored
        self.owner = calls.new_owner()
        # In-process gates of the inline loop: per-render concurrency, and two identical
        # shots of one brief (same key), the second waiting for the first.
        self.limit = asyncio.Semaphore(settings.limit_for(caps.provider))
        self.key_locks: dict[str, asyncio.Lock] = {}
        self.last: dict[int, Step] = {}
        self.chain = dict(chain or {})
        self.finished: dict[int, asyncio.Event] = {}  # shots this loop has settled
        # How long to wait for a provider slot another worker holds.
        self.slot_wait = max(0.2, min(1.0, settings.poll_interval))

    def allow_retake(self, again: ShotRequest) -> None:
        """Reserve one more try at shot ``again.index`` as a new take (the quality gate's
        automatic re-roll), and make it the shot this renderer makes next; BudgetError if
        the caps cannot cover it. Nothing is spent here."""
        cost = call_cost(self.caps, again.seconds, again.size, again.audio)
        with self.db.write() as conn:
            others = [i for i in lifecycle.unfinished_shots(conn, self.render_id)
                      if i != again.index and i in self.costs]
            need = ledger.billed(conn, self.render_id) + cost.cost_usd + sum(
                (self.costs[i].cost_usd for i in others), Decimal(0))
            ledger.reserve(conn, self.render_id, need, self.limits, grow_only=True)
            lifecycle.begin_shots(conn, self.render_id, [again.index])
        self.requests[again.index] = again
        self.costs[again.index] = cost

    # --- the inline driver -----------------------------------------------------------

    async def run_shot(self, request: ShotRequest) -> ShotResult:
        """Make one shot here and now, step after step (the embedded worker and the CLI)."""
        if request.index in self.chain and self.store.clip(request.key) is None:
            # Wait for the shot before outside the provider's limit: a continuation holding
            # a place while its predecessor waits for one would never start.
            await self.finished.setdefault(self.chain[request.index][0], asyncio.Event()).wait()
        try:
            return await self._run_shot(request)
        finally:
            self.finished.setdefault(request.index, asyncio.Event()).set()

    async def _run_shot(self, request: ShotRequest) -> ShotResult:
        async with self.key_locks.setdefault(request.key, asyncio.Lock()), self.limit:
            try:
                step = await asyncio.wait_for(self._drive(request.index),
                                              self.settings.render_deadline)
            except TimeoutError:
                step = Step("failed", error=self._late(self.last.get(request.index)))
        return self.settle(request.index, step)

    async def _drive(self, index: int) -> Step:
        step = Step()
        while not step.final:
            if step.delay:
                await asyncio.sleep(step.delay)
            step = self.last[index] = await self.advance(index, step)
        return step

    # --- the steps, shared by every driver --------------------------------------------

    async def advance(self, index: int, step: Step) -> Step:
        """Take one step for shot ``index``; the next step (``final`` when it is over)."""
        request = self.requests[index]
        now = time.time()
        if step.started and now - step.started > self.settings.render_deadline:
            return Step("failed", error=self._late(step))
        step = replace(step, delay=0.0, started=step.started or now)
        try:
            if step.action == "claim":
                return await self._claim(request, step)
            if step.action == "poll":
                return await self._poll(request, step)
            if step.action == "fetch":
                return await self._fetch(request, step)
        except _Again as again:
            return Step("claim", delay=again.delay, started=step.started)
        except ProviderError as exc:  # the vendor's own words go to the user
            error = str(exc) if exc.reason in str(exc) else f"{exc} ({exc.reason})"
            return replace(step, action="failed", error=error)
        except BudgetError as exc:
            return replace(step, action="failed", error=str(exc), over_budget=True)
        except (MediaError, UserError) as exc:
            return replace(step, action="failed", error=str(exc))
        return step

    def settle(self, index: int, step: Step) -> ShotResult:
        """Record a shot's final state (once its last step is taken) and its result."""
        request = self.requests[index]
        stored = None if step.error else self.store.clip_name(request.key)
        result = ShotResult(
            index, request.key, clip=self.store.blobs.local(stored) if stored else None,
            stored=stored, cached=step.cached, cost_usd=Decimal(step.cost_usd),
            job_id=(step.job or {}).get("job_id"), error=step.error,
            over_budget=step.over_budget)
        state = "failed" if result.error else ("cached" if result.cached else "done")
        # A shot served from the store keeps what it cost when this render paid for it.
        paid = {} if result.cached else {"cost_usd": result.cost_usd}
        with self.db.write() as conn:
            lifecycle.set_shot(conn, self.render_id, index, state=state, cached=result.cached,
                               error=result.error, progress=None if result.error else 1.0,
                               **paid)
        if result.error:
            result.error = f"shot {index + 1}: {result.error}"
            self.emit(ShotEvent(index, "failed", message=result.error))
        return result

    def _late(self, step: Step | None) -> str:
        job = (step.job or {}).get("job_id") if step else None
        return (f"did not finish within {self.settings.render_deadline:g} s (job {job}); the "
                "job was left with the provider, not resubmitted")

    def _serve_stored(self, request: ShotRequest) -> Step | None:
        if self.store.clip(request.key) is None:
            return None
        with self.db.write() as conn:
            self.store.touch(conn, request.key)
            lifecycle.set_shot(conn, self.render_id, request.index, state="cached", cached=True)
            ledger.record_saving(conn, self.render_id, request.key, self.caps.provider,
                                 self.caps.model, self.costs[request.index].cost_usd)
        self.emit(ShotEvent(request.index, "cached"))
        return Step("done", cached=True)

    async def _claim(self, request: ShotRequest, step: Step) -> Step:
        """Serve the shot from the store, or claim it and submit, follow or reconcile."""
        if (served := self._serve_stored(request)) is not None:
            return served
        if request.index in self.chain and request.first_frame is None:
            if (waiting := await self._start_frame(request, step)) is not None:
                return waiting
            request = self.requests[request.index]
        with self.db.write() as conn:
            # A slot first: the provider's limit counts jobs in flight on every worker.
            if not slots.acquire(conn, self.caps.provider, request.key,
                                 self.settings.limit_for(self.caps.provider),
                                 self.settings.lease_seconds):
                c = None
            else:
                c = calls.claim(conn, request.key, self.caps.provider, self.caps.model,
                                self.owner)
                if c.action == "done":
                    slots.release(conn, request.key)
        if c is None:
            step = self._waiting(request, step, "waiting for a provider slot")
            # Jittered, so shots waiting for the same provider do not all ask at once.
            return replace(step, delay=self.slot_wait * random.uniform(1.0, 2.0))
        ref: JobRef | None
        if c.action == "wait":  # another process is submitting this very shot
            return replace(self._waiting(request, step, "shared with another render"), delay=0.2)
        if c.action == "done":
            if (served := self._serve_stored(request)) is not None:
                return served
            # Made before, but the file was pruned since: making it again is a new call.
            calls.set_call(self.db, request.key, "failed", error="clip no longer stored")
            return step
        if c.action == "reconcile":  # a claim whose owner died: submitted or not?
            ref = await self._reconcile(request, c.since)
        elif c.action == "lead":
            ref = await self._submit(request, c.attempts)
        else:
            assert c.job is not None
            ref = JobRef.from_json(c.job)
        if ref is None:
            return step  # nothing is in flight for this key: claim it again
        return replace(step, action="poll", job=ref.to_json(), attempt=c.attempts,
                       renewed=time.time(), waiting="")

    async def _start_frame(self, request: ShotRequest, step: Step) -> Step | None:
        """Give a continuation its first frame, the last frame the output shows of the shot
        before, once that clip is stored; until then, the step that waits for it (or fails
        with it: a continuation cannot start without the frame it continues)."""
        before, at = self.chain[request.index]
        clip = self.store.clip(self.requests[before].key)
        if clip is None:
            with self.db.read() as conn:
                state = lifecycle.shot_state(conn, self.render_id, before)
            if state == "failed":
                return replace(step, action="failed",
                               error=f"it continues shot {before + 1}, which failed")
            step = self._waiting(request, step, f"waiting for shot {before + 1}'s last frame")
            # Its deadline starts when it can start: a chain takes its shots' times in a row.
            return replace(step, started=0.0, delay=self.settings.poll_interval)
        local = await asyncio.to_thread(self.store.file, clip.name)
        data, width, height = await asyncio.to_thread(media.frame_png, local, at,
                                                      parse_size(request.size))
        ref = ImageRef(sha256="sha256:" + hashlib.sha256(data).hexdigest(), mime="image/png",
                       width=width, height=height, bytes=len(data))
        with self.db.write() as conn:  # like any input image: a re-run or a reviewer finds it
            stored_images.put(conn, [ref], {ref.sha256: data})
        self.requests[request.index] = replace(
            request, first_frame=ImageInput(ref.sha256, data, ref.mime, width, height))
        return None

    def _waiting(self, request: ShotRequest, step: Step, why: str) -> Step:
        """Tell a shot's wait once, not on every look (a slot can take a lease to free)."""
        if step.waiting != why:
            self.emit(ShotEvent(request.index, "queued", message=why))
        return replace(step, waiting=why)

    def _authorize(self, request: ShotRequest) -> None:
        """Make sure the reservation covers this submit, growing it within every cap.

        What it must cover: what the render has billed, plus one attempt at every shot not
        finished yet (this one included), read from the render's shot states so that every
        worker making a shot of this render sees the same figure. Raises BudgetError (and
        frees the claim) if it cannot: the attempts already made stay in the ledger and
        the clips already made stay stored.
        """
        try:
            with self.db.write() as conn:
                still = lifecycle.unfinished_shots(conn, self.render_id)
                need = ledger.billed(conn, self.render_id) + sum(
                    (self.costs[i].cost_usd for i in still if i in self.costs), Decimal(0))
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
            raise _Again(self._failed_attempt(request, attempt, exc.reason,
                                              exc.retry_after)) from None
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

    def _failed_attempt(self, request: ShotRequest, attempt: int, reason: str,
                        retry_after: float | None) -> float:
        """Free the claim after a failed attempt; how long to wait before the next one."""
        calls.set_call(self.db, request.key, "failed", error=reason)
        if attempt >= self.settings.max_attempts:
            raise PermanentError(f"gave up after {attempt} attempts: {reason}", reason=reason)
        delay = backoff(attempt - 1, self.settings.backoff_base, retry_after)
        self.emit(ShotEvent(request.index, "queued", message=f"retry in {delay:.1f} s: {reason}"))
        return delay

    def _renew_slot(self, request: ShotRequest, step: Step) -> Step:
        """Keep the shot's provider slot while its job runs (a few writes per lease)."""
        now = time.time()
        if now - step.renewed < self.settings.lease_seconds / 4:
            return step
        with self.db.write() as conn:
            slots.renew(conn, self.caps.provider, request.key, self.settings.lease_seconds, now)
        return replace(step, renewed=now)

    async def _poll(self, request: ShotRequest, step: Step) -> Step:
        """Ask the provider once; the next step and when to take it."""
        assert step.job is not None
        ref = JobRef.from_json(step.job)
        step = self._renew_slot(request, step)
        try:
            status = await self.provider.poll(ref)
        except RetryableError as exc:  # a dropped poll costs nothing: just poll again
            return replace(step, delay=backoff(0, self.settings.poll_interval, exc.retry_after))
        if status.state == "failed":
            reason = status.error or "the provider reported a failed job"
            if self.caps.billed_on_failure:
                with self.db.write() as conn:
                    ledger.record(conn, self._charge(ref, request, status, "failed"))
            if not status.retryable:
                calls.set_call(self.db, request.key, "failed", error=reason)
                raise PermanentError(f"job {ref.job_id} failed: {reason}", reason=reason)
            raise _Again(self._failed_attempt(request, step.attempt, reason, None))
        if status.state == "succeeded":
            return replace(step, action="fetch", billed_seconds=status.billed_seconds)
        self.emit(ShotEvent(request.index, "rendering", status.progress))
        return replace(step, delay=status.next_poll or self.settings.poll_interval)

    async def _fetch(self, request: ShotRequest, step: Step) -> Step:
        """Download, probe and store the clip, and bill it, in one transaction with its state."""
        assert step.job is not None
        ref = JobRef.from_json(step.job)
        status = JobStatus("succeeded", billed_seconds=step.billed_seconds)
        self.emit(ShotEvent(request.index, "downloading"))
        try:
            tmp, seconds = await self._download(ref, request)
        except (MediaError, ProviderError):
            # The vendor made (and billed) the clip even if we could not fetch it. The call
            # stays 'submitted', so a later run tries this job's file again for free.
            with self.db.write() as conn:
                ledger.record(conn, self._charge(ref, request, status, "undelivered"))
            raise
        checkpoint("downloaded")
        try:
            saved = await asyncio.to_thread(self.store.save_clip, request.key, tmp)
        except StorageError as exc:  # the store hiccuped: fetching again is free
            tmp.unlink(missing_ok=True)
            self.emit(ShotEvent(request.index, "downloading", message=str(exc)))
            return replace(step, delay=backoff(1, self.settings.backoff_base, None))
        except BaseException:  # a cancel included: no partial file stays behind
            tmp.unlink(missing_ok=True)
            raise
        cost = self.costs[request.index]
        with self.db.write() as conn:
            self.store.record_clip(conn, request.key, saved, seconds=seconds,
                                   provider=self.caps.provider, model=self.caps.model,
                                   cost_usd=cost.cost_usd)
            paid = ledger.record(conn, self._charge(ref, request, status, "succeeded"))
            calls.set_call_in(conn, request.key, "done")
        checkpoint("done")
        if self.on_stored is not None:
            await self.on_stored(request, saved.name)
        self.emit(ShotEvent(request.index, "done"))
        # Another render's call, shared: no charge here, and the clip counts as cached.
        return replace(step, action="done", cost_usd=str(cost.cost_usd if paid else 0),
                       cached=not paid)

    def _charge(self, ref: JobRef, request: ShotRequest, status: JobStatus,
                outcome: str) -> ledger.Charge:
        cost = self.costs[request.index]
        seconds = cost.billed_seconds
        if status.billed_seconds is not None:  # what the vendor says it billed wins
            seconds = int(-(-status.billed_seconds // 1))
        return ledger.Charge(
            render_id=self.render_id, shot_key=request.key, provider=self.caps.provider,
            model=self.caps.model, provider_job_id=ref.job_id, seconds_billed=seconds,
            audio=request.audio, unit_price=cost.unit_price, amount=cost.unit_price * seconds,
            outcome=outcome)

    async def _download(self, ref: JobRef, request: ShotRequest) -> tuple[Path, float]:
        """Download to a temporary name and probe it; vendor URLs expire, so fetch now."""
        tmp = self.store.temp_path(self.store.clip_name(request.key), ref.job_id)
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
    shots = [ShotResult(r.index, r.key, cached=True, stored=job.store.clip_name(r.key))
             for r in requests]
    output, poster, sheet = deliver(job.store, stored["path"], job.output)
    with job.db.read() as conn:
        flags = output_flags(conn, stored["render_id"])
    return RenderResult(
        render_id=stored["render_id"], output=output, seconds=stored["seconds"],
        cost_usd=Decimal(0), shots=shots, poster=poster, contact_sheet=sheet, key=key,
        plan=plan, reopened=True, flags=flags)


def output_flags(conn: Connection, render_id: str) -> list[quality.Flag]:
    """The quality flags recorded on a render's output."""
    return [quality.Flag.from_json(f) for f in lifecycle.output_quality(conn, render_id)]


def _still(output: Path, kind: str) -> Path:
    return output.with_name(f"{output.stem}.{kind}.jpg")


def deliver(store: Store, name: str, dest: Path | None) -> tuple[Path, Path, Path]:
    """Files with a stored output and its stills: copied to where the user asked, if
    anywhere, else the store's own files (or this machine's copies of them)."""
    files = store.output_files(name)
    if dest is None:
        return files
    video, poster, sheet = files
    copy_atomic(poster, _still(dest, "poster"))
    copy_atomic(sheet, _still(dest, "contact"))
    return copy_atomic(video, dest), _still(dest, "poster"), _still(dest, "contact")


def plan_requests(plan: Plan, caps: Capabilities, settings: Settings, loudness: float | None,
                  images: Mapping[str, bytes] | None = None) -> tuple[list[ShotRequest], str]:
    """The provider calls of a plan (with the bytes of its images, when given) and the
    render key they make: its shots in order, then the takes not picked (core/takes.py),
    whose index is their slot."""
    requests = [request_for(plan, s, caps, images) for s in plan.shots]
    requests += [replace(request_for(plan, s, caps, images), shot=slot_owner(plan, s.index))
                 for s in extras(plan)]
    return requests, render_key([r.key for r in requests[:len(plan.shots)]],
                                stitch_settings(plan, settings, loudness))


async def render_plan(plan: Plan, job: RenderJob) -> RenderResult:
    """Render every shot of ``plan``, segment each as it arrives, join, verify, store, settle."""
    blobs = inputs.gather(job.db, plan, job.images)
    requests, key = plan_requests(plan, job.caps, job.settings, job.target, blobs)
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
            limits = limits_of(conn, job, render_id)
            ledger.reserve(conn, render_id, ledger.billed(conn, render_id) + todo, limits)
            lifecycle.begin_shots(conn, render_id, [r.index for r in to_make])
    else:
        render_id = job.render_id
        with job.db.read() as conn:
            limits = limits_of(conn, job, render_id)
        _move(job, render_id, "rendering",
              also=lambda conn: lifecycle.begin_shots(conn, render_id, [r.index for r in to_make]))
    segments: dict[str, Prepared] = {}  # by shot key: made as each clip is stored

    async def on_stored(request: ShotRequest, name: str) -> None:
        if request.index < len(plan.shots):  # a take not picked is only stored
            segments[request.key] = await segment(job.db, job.store, render_id, assembly,
                                                  request, name)

    chain = chain_of(plan)
    renderer = Renderer(job.provider, job.caps, job.settings, job.db, job.store, render_id,
                        job.listener, limits, requests, on_stored, chain)
    continued = {before for before, _ in chain.values()}

    async def shot(request: ShotRequest) -> ShotResult:
        if request.index >= len(plan.shots):  # a take not picked: made and stored, no segment
            return await renderer.run_shot(request)
        result = await _shot(renderer, assembly, segments, request)
        # A shot with takes is not re-rolled by the gate: the reviewer picks among them.
        if job.settings.quality_reroll and result.segment and quality.failing(result.flags) \
                and not plan.shots[request.index].takes:
            if request.index in continued:  # the next shot started from this take's frame
                renderer.emit(ShotEvent(request.index, "done", message=(
                    f"not re-rolled: shot {request.index + 2} continues from this take")))
                return result
            return await _retake(job, plan, renderer, assembly, segments, request, result, blobs)
        return result

    made = list(await asyncio.gather(*(shot(r) for r in requests)))
    shots, others = made[:len(plan.shots)], made[len(plan.shots):]
    this_run = sum((s.cost_usd for s in made), Decimal(0))
    if failed := [s for s in made if s.error]:
        message = failure_message([s.error or "" for s in failed],
                                  sum(1 for s in made if s.stored), len(made))
        _move(job, render_id, "failed", error=message, settle=True)
        if any(s.over_budget for s in failed):
            raise BudgetError(f"render {render_id} stopped: {message}")
        raise RenderFailed(message, render_id, made)
    if any(s.retake for s in shots):
        plan, key = _retaken(job, plan, render_id, shots)
    prepared = [s.segment for s in shots if s.segment is not None]
    name, seconds, flags = await stitch(plan, job, render_id, key, [s.key for s in shots],
                                        prepared if len(prepared) == len(shots) else None)
    output, poster, sheet = deliver(job.store, name, job.output)
    return RenderResult(
        render_id=render_id, output=output, seconds=seconds, cost_usd=this_run, shots=shots,
        poster=poster, contact_sheet=sheet, key=key, plan=plan, estimate_usd=todo, flags=flags,
        takes=others)


async def segment(db: Database, store: Store, render_id: str, assembly: Assembly,
                  request: ShotRequest, name: str) -> Prepared:
    """Shot ``request``'s segment, made from its stored clip ``name`` (or found made), with its
    quality flags recorded on its shot: what every driver does as a clip arrives."""
    clip = await asyncio.to_thread(store.file, name)
    made = await asyncio.to_thread(assembly.prepare, request.index, clip, request.key,
                                   asked=request.seconds)
    with db.write() as conn:
        lifecycle.set_shot(conn, render_id, request.index,
                           quality=[f.to_json() for f in made.flags])
    return made


async def _shot(renderer: Renderer, assembly: Assembly, segments: dict[str, Prepared],
                request: ShotRequest) -> ShotResult:
    """One shot from request to segment. A clip made now got its segment as it was stored
    (``on_stored``); one served from the store gets it here, while other shots still render."""
    result = await renderer.run_shot(request)
    if result.stored is None or result.error:
        return result
    try:
        made = segments.get(request.key) or await segment(
            renderer.db, renderer.store, renderer.render_id, assembly, request, result.stored)
    except MediaError as exc:
        result.error = f"shot {request.index + 1}: {exc}"
        return result
    result.segment, result.flags = made, list(made.flags)
    renderer.emit(ShotEvent(request.index, "cached" if result.cached else "done",
                            message="segment ready"))
    return result


async def _retake(job: RenderJob, plan: Plan, renderer: Renderer, assembly: Assembly,
                  segments: dict[str, Prepared], request: ShotRequest, first: ShotResult,
                  blobs: Mapping[str, bytes]) -> ShotResult:
    """The quality gate failed a shot: render it once more as a new take, if the budget allows,
    and keep that take unless it fails more checks than the first (inline renders only)."""
    shot = plan.shots[request.index]
    again = request_for(plan, shot.model_copy(update={"take": shot.take + 1}), job.caps, blobs)
    try:
        renderer.allow_retake(again)
    except BudgetError as exc:
        renderer.emit(ShotEvent(request.index, "done", message=f"not re-rolled: {exc}"))
        return first
    why = "; ".join(f.message for f in quality.failing(first.flags))
    renderer.emit(ShotEvent(request.index, "queued",
                            message=f"re-rolling as take {again.take}: {why}"))
    second = await _shot(renderer, assembly, segments, again)
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
    _, key = plan_requests(plan, job.caps, job.settings, job.target)
    with job.db.write() as conn:
        lifecycle.set_render(conn, render_id, plan=plan.model_dump(mode="json"), key=key)
    return plan, key


def failure_message(errors: list[str], stored: int, total: int) -> str:
    return "; ".join(errors) + (f" ({stored} of {total} clips are stored and will not be paid "
                                "for again)")


def limits_of(conn: Connection, job: RenderJob, render_id: str) -> ledger.Limits:
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


async def make_output(plan: Plan, store: Store, settings: Settings, key: str,
                      clip_keys: list[str], loudness: float | None,
                      prepared: list[Prepared] | None = None,
                      ) -> tuple[str, float, bool, list[quality.Flag]]:
    """The stored output for render key ``key``: (its name, seconds, whether made now, its
    quality flags).

    Made from the segments of the stored clips of ``clip_keys`` if no render made it before:
    ``prepared`` when the caller made them as the clips arrived, else made (or found made)
    here; joined by copy and verified in a scratch directory of its own, its stills cut,
    then all three stored. Its row is the caller's to write (with the render's state change).
    """
    if (stored := store.output(key)) is not None:  # made before, by a twin render
        with store.db.read() as conn:
            flags = output_flags(conn, str(stored["render_id"]))
        return str(stored["path"]), float(stored["seconds"]), False, flags
    assembly = assembly_for(plan, settings, store, loudness)
    if prepared is None:
        prepared = []
        for index, clip_key in enumerate(clip_keys):
            clip = store.clip(clip_key)
            if clip is None:
                raise MediaError(f"the clip of shot {index + 1} is no longer stored; render "
                                 "again to make it (it will be paid for again)")
            local = await asyncio.to_thread(store.file, clip.name)
            prepared.append(await asyncio.to_thread(
                assembly.prepare, index, local, clip_key, asked=plan.shots[index].seconds))
    work = store.scratch / "stitch" / uuid.uuid4().hex  # two stitches never share files
    output = work / Path(store.output_name(key)).name
    try:
        work.mkdir(parents=True)
        joined = await asyncio.to_thread(assembly.join, prepared, output)
        await asyncio.to_thread(_stills, output, prepared)
        checkpoint("stitched")
        name = await asyncio.to_thread(store.save_output, key, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return name, joined.probe.duration, True, list(joined.flags)


async def stitch(plan: Plan, job: RenderJob, render_id: str, key: str, clip_keys: list[str],
                 prepared: list[Prepared] | None = None,
                 ) -> tuple[str, float, list[quality.Flag]]:
    """Join a render whose clips are all stored and move it to awaiting_review; the output's
    name in the store, its length and its quality flags. Every driver ends a render here."""
    _move(job, render_id, "stitching")
    job.listener(ShotEvent(-1, "stitching"))
    started = time.monotonic()
    name, seconds, made, flags = await make_output(plan, job.store, job.settings, key,
                                                   clip_keys, job.target, prepared)

    def also(conn: Connection) -> None:
        if made:
            job.store.put_output(conn, key, name, seconds, render_id)

    job.listener(ShotEvent(-1, "stitched", message=f"{time.monotonic() - started:.2f} s"))
    _move(job, render_id, "awaiting_review", settle=True, also=also, output=name,
          seconds=seconds, quality=[f.to_json() for f in flags])
    return name, seconds, flags


def _stills(output: Path, segments: list[Prepared]) -> None:
    """A poster frame a third of the way in, and a contact sheet of each shot's middle frame."""
    media.poster(output, _still(output, "poster"))
    media.tile([s.thumb for s in segments if s.thumb is not None], _still(output, "contact"))
