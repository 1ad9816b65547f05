"""The scale-out engine: renders as Celery tasks (``SHOTLINE_QUEUE=celery``, Redis broker).

``shotline serve`` accepts, plans, reserves and enqueues :func:`start`; ``shotline worker``
runs a Celery worker with these tasks. They take the same engine steps as the inline
worker (:class:`~shotline.engine.renderer.Renderer`), one step per task:

* ``shotline.start(render_id, key, run)`` moves the render to ``rendering`` and fans its
  shots out, one ``shotline.shot`` each. It is published inside the transaction that
  queued (or re-rolled) the render, so a broker that cannot take it rolls the request
  back; a start that runs before that commit is visible looks again shortly (the render
  ``key`` it carries tells the new render from the old one). The first start of a run
  leaves a mark (a ``start`` event with its ``run``); a redelivered one sends only the
  shots that are not over.
* ``shotline.shot(render_id, index, key, step)`` takes one step of one shot: claim,
  authorize and submit; poll once; or download, probe, store and bill. A step that must
  wait (a vendor's poll hint, a backoff, a provider slot) is the next task's countdown,
  so no worker slot is held while a vendor renders. The last step records the shot and
  looks at the database: once every shot is stored it enqueues the stitch (or fails the
  render if a shot failed). A continuation (it starts from the last frame of the shot
  before) is sent by its predecessor's last step, not by the start, so a chain renders in
  order; sent early anyway (a redelivery, the watchdog), its claim waits for that frame.
* ``shotline.stitch(render_id)`` is the fan-in. It takes the render's stitch lease with a
  conditional update (``lifecycle.claim_stitch``), so of two stitch tasks (a redelivered
  one, or two shots finishing together) one stitches and the other looks again when the
  lease would have lapsed; the output is content-addressed and the move to
  ``awaiting_review`` happens once, so nothing is stitched, announced or settled twice.
* ``shotline.webhooks`` sends due webhooks; each worker's embedded beat runs it every
  second (two beats only double the ticks: deliveries are claimed with SKIP LOCKED).
* ``shotline.watchdog`` (also on the beat) sends again the unfinished shots of a render
  that wrote no event for two visibility timeouts: Redis can lose a message outright (see
  :func:`watchdog_task`), and then no redelivery would ever come.

Every task is idempotent at its effect: a submit only after the singleflight claim in the
calls table, a charge only once per vendor job (the ledger's unique key), a clip and an
output under their content keys. Tasks are acknowledged late and given back when their
worker dies (``acks_late``, ``reject_on_worker_lost``); Redis hands the task a dead worker
held to another one after ``SHOTLINE_VISIBILITY_TIMEOUT``, which must exceed the longest
task (a stitch or a download) and the longest countdown (capped at half of it).

Cancel (``actions.cancel``) moves the render to ``cancelled``, revokes its queued tasks
(every task carries the ``render_id`` stamp), and cancels its vendor jobs; a task that
runs anyway sees the state and stops, cancelling a job it may have just submitted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from celery import Celery, Task
from celery.exceptions import Retry

from ..api import open_store
from ..core.capabilities import table_for
from ..core.planner import Plan
from ..engine import inputs
from ..engine.renderer import (
    Renderer,
    RenderJob,
    RenderStopped,
    Step,
    assembly_for,
    chain_of,
    failure_message,
    limits_of,
    plan_requests,
    segment,
    stitch,
)
from ..errors import ConfigError, ShotlineError
from ..providers.base import ShotRequest
from ..providers.plugins import load_provider
from ..settings import Settings
from ..store import calls, ledger, lifecycle
from ..store.cache import Store
from ..store.db import Database, render_shots, renders
from . import actions, webhooks
from .worker import ProgressLog

log = logging.getLogger(__name__)
T = TypeVar("T")

app = Celery("shotline", set_as_current=False)
# Settings of this process, set by configure(); prefork children inherit them.
_settings: Settings | None = None
START_TRIES = 40  # a start waits up to 20 s for the transaction that sent it to commit
START_WAIT = 0.5


def redacted(url: str) -> str:
    """A broker URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def configure(settings: Settings) -> Celery:
    """Point the app at ``settings``' broker with the options the promises rely on.

    Messages are sent on connections made from the configuration of the moment (not the
    app's pool), so a process that configures again (a test, say) sends to the new broker.
    """
    global _settings
    if not settings.broker_url:
        raise ConfigError("SHOTLINE_QUEUE=celery needs SHOTLINE_BROKER_URL, e.g. "
                          "redis://127.0.0.1:6379/0")
    _settings = settings
    # Redis gives back a dead worker's tasks once they are older than the visibility
    # timeout, but only when a sweep looks: sweep every sixth of the timeout (at most
    # every 10 s), so they come back within about 1.2 timeouts, not minutes later.
    transport: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": max(1, min(10, int(settings.visibility_timeout / 6))),
        "unacked_restore_throttle": 1,
    }
    if settings.broker_prefix:
        transport["global_keyprefix"] = settings.broker_prefix
    app.conf.update(
        broker_url=settings.broker_url,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        beat_schedule={
            "shotline-webhooks": {"task": "shotline.webhooks", "schedule": 1.0,
                                  "options": {"expires": 10}},
            "shotline-watchdog": {"task": "shotline.watchdog",
                                  "schedule": min(60.0, max(5.0, settings.visibility_timeout / 6)),
                                  "options": {"expires": 60}},
        },
    )
    return app


def check_broker(settings: Settings) -> None:
    """Raise ConfigError unless the broker answers (once, now, not on the first render)."""
    configure(settings)
    assert settings.broker_url is not None
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # kombu raises whatever its transport does
        raise ConfigError(f"cannot reach the task queue's broker at "
                          f"{redacted(settings.broker_url)} ({type(exc).__name__}): start it, "
                          "or fix SHOTLINE_BROKER_URL") from None


def run_worker(settings: Settings, concurrency: int | None = None) -> None:
    """``shotline worker`` with SHOTLINE_QUEUE=celery: a Celery worker (prefork) with an
    embedded beat for webhook deliveries; runs until SIGTERM (warm) or SIGINT."""
    configure(settings)
    settings.scratch.mkdir(parents=True, exist_ok=True)
    argv = ["worker", "--loglevel=INFO", f"--hostname=shotline-{os.getpid()}@%h", "--beat",
            f"--schedule={settings.scratch / 'celerybeat-schedule'}", "--without-gossip",
            "--without-mingle"]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)


# --- sending ---------------------------------------------------------------------------


def _send(name: str, render_id: str, args: tuple[Any, ...], countdown: float = 0) -> None:
    assert _settings is not None, "configure() first"
    # A countdown longer than the visibility timeout would have Redis hand the waiting
    # task to a second worker: poll hints and backoffs are capped well below it.
    countdown = min(max(countdown, 0.0), _settings.visibility_timeout / 2)
    # A connection made from the configuration as it is now (see configure()).
    with app.connection_for_write() as connection:
        app.send_task(name, args=args, countdown=countdown or None, connection=connection,
                      stamped_headers=["render_id"], render_id=render_id)


def dispatch(render_id: str, key: str, *, resume: bool = False) -> None:
    """Enqueue a render's start (inside the transaction that made it runnable); ``resume``
    sends only its shots that are not over (a requeued render)."""
    _send("shotline.start", render_id, (render_id, key, uuid.uuid4().hex, resume))


def revoke(render_id: str) -> None:
    """Tell every worker to drop the render's tasks still queued or waiting a countdown."""
    with app.connection_for_write() as connection:
        app.control.revoke_by_stamped_headers({"render_id": render_id}, connection=connection)


# --- the worker's side -------------------------------------------------------------------


@dataclass
class Context:
    """What one worker process keeps between tasks (made after the fork)."""

    settings: Settings
    db: Database
    store: Store
    pid: int


_context: Context | None = None


def context() -> Context:
    global _context
    if _context is None or _context.pid != os.getpid():
        settings = _settings or Settings()
        db, store = open_store(settings)
        _context = Context(settings, db, store, os.getpid())
    return _context


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


if TYPE_CHECKING:
    # celery-types makes Task generic for the type checker; Celery's class is not subscriptable
    # at run time in every release.
    _TaskBase = Task[Any, Any]
else:
    _TaskBase = Task


class ShotlineTask(_TaskBase):
    """Runs a task body; an unexpected error is retried, then fails the render."""

    max_retries = 5

    def guarded(self, render_id: str, body: Coroutine[Any, Any, None]) -> None:
        try:
            _run(body)
        except Retry:
            raise
        except Exception as exc:
            if self.request.retries >= self.max_retries:
                log.exception("render %s: %s gave up", render_id, self.name)
                _fail(render_id, f"internal error: {type(exc).__name__}")
                return
            log.warning("render %s: %s failed (%s); trying again", render_id, self.name, exc)
            raise self.retry(countdown=2 ** self.request.retries, exc=exc) from None


@app.task(name="shotline.start", bind=True, base=ShotlineTask)
def start_task(self: ShotlineTask, render_id: str, key: str, run: str,
               resume: bool = False) -> None:
    self.guarded(render_id, _start(self, render_id, key, run, resume))


@app.task(name="shotline.shot", bind=True, base=ShotlineTask)
def shot_task(self: ShotlineTask, render_id: str, index: int, key: str,
              step: dict[str, Any]) -> None:
    self.guarded(render_id, _shot(render_id, index, key, Step.from_json(step)))


@app.task(name="shotline.stitch", bind=True, base=ShotlineTask)
def stitch_task(self: ShotlineTask, render_id: str) -> None:
    self.guarded(render_id, _stitch(render_id))


@app.task(name="shotline.webhooks")
def webhooks_task() -> None:
    ctx = context()
    _run(webhooks.deliver_due(ctx.db, ctx.settings))


@app.task(name="shotline.watchdog")
def watchdog_task() -> None:
    """Send again the renders that made no progress for two visibility timeouts.

    Redis can lose a message outright: a worker killed between taking it off the queue
    (BRPOP) and recording it as unacknowledged leaves no copy for the sweep to give back.
    A render being made writes an event at every step, and a dead worker's tasks come back
    within about 1.2 timeouts, so a render silent for two has lost a task: its unfinished
    shots are sent again (a copy of a chain still alive is harmless, see above).
    """
    ctx = context()
    before = time.time() - 2 * ctx.settings.visibility_timeout
    with ctx.db.read() as conn:
        stale = lifecycle.stalled(conn, before)
    for render_id in stale:
        with ctx.db.write() as conn:
            key = lifecycle.take_stalled(conn, render_id, before)
            if key is not None:
                dispatch(render_id, key, resume=True)
        if key is not None:
            log.warning("render %s made no progress for %.0f s: its unfinished shots were "
                        "sent again", render_id, 2 * ctx.settings.visibility_timeout)


def _row(db: Database, render_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(renders).where(renders.c.id == render_id)).first()


def _job(ctx: Context, row: Any, owner: str | None = None) -> tuple[RenderJob, Plan]:
    table = table_for(ctx.settings.overrides_path)
    with ctx.db.read() as conn:
        preview = lifecycle.is_preview(conn, row)
    caps = table.drawing(table.get(row.model), preview=preview)
    job = RenderJob(caps=caps, provider=load_provider(caps.provider, ctx.settings),
                    settings=ctx.settings, db=ctx.db, store=ctx.store, brief_text=row.brief,
                    max_usd=row.max_usd, listener=ProgressLog(ctx.db, row.id),
                    render_id=row.id, owner=owner, base_url=ctx.settings.public_url,
                    loudness=(row.options or {}).get("loudness"))
    return job, Plan.model_validate(row.plan)


def _shots(db: Database, render_id: str) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(render_shots).where(
            render_shots.c.render_id == render_id).order_by(render_shots.c.idx)))


async def _start(task: ShotlineTask, render_id: str, key: str, run: str,
                 resume: bool) -> None:
    ctx = context()
    row = _row(ctx.db, render_id)
    if row is not None and row.key == key and row.status == "stitching":  # requeued
        _send("shotline.stitch", render_id, (render_id,))
        return
    if row is None or row.key != key or row.status not in ("queued", "rendering"):
        # Not committed yet (we were sent from inside its transaction), or over already.
        if (row is None or row.key != key) and task.request.retries < START_TRIES:
            raise task.retry(countdown=START_WAIT, max_retries=START_TRIES)
        return
    shots = _shots(ctx.db, render_id)
    with ctx.db.write() as conn:
        # The run's mark, written with the move: a redelivered start finds it and only
        # sends the shots that are not over (some may never have been sent), where a first
        # start sends every shot (a stored one is served from the store, cost 0, as inline).
        again = resume or lifecycle.has_event(conn, render_id, "start", {"run": run})
        todo = [s.idx for s in shots if not again or s.state not in ("done", "cached")]
        moved = lifecycle.transition(conn, render_id, "rendering",
                                     only_from=("queued", "rendering"),
                                     base_url=ctx.settings.public_url,
                                     cost_usd=ledger.billed(conn, render_id))
        if moved:
            lifecycle.begin_shots(conn, render_id, todo)
            if not again:
                lifecycle.append_event(conn, render_id, "start", {"run": run})
    if not moved:
        return
    chain = chain_of(Plan.model_validate(row.plan))
    for index in todo:
        if index in chain and chain[index][0] in todo:
            continue  # sent when the shot it continues is over (see _shot)
        _send("shotline.shot", render_id,
              (render_id, index, shots[index].key, Step().to_json()))
    if not todo:
        _send("shotline.stitch", render_id, (render_id,))


async def _shot(render_id: str, index: int, key: str, step: Step) -> None:
    ctx = context()
    row = _row(ctx.db, render_id)
    current = next((s for s in _shots(ctx.db, render_id) if s.idx == index), None)
    if row is None or current is None or current.key != key:
        return  # a chain from before a re-roll: that shot is another take now
    if row.status != "rendering":
        if row.status == "cancelled" and step.job:  # submitted just as it was cancelled
            table = table_for(ctx.settings.overrides_path)
            await actions.cancel_vendor_jobs(ctx.db, ctx.settings, table, render_id)
        return
    job, plan = _job(ctx, row)
    try:
        requests, _ = plan_requests(plan, job.caps, ctx.settings, job.target,
                                    inputs.gather(ctx.db, plan, {}))
        with ctx.db.read() as conn:
            limits = limits_of(conn, job, render_id)
        assembly = assembly_for(plan, ctx.settings, ctx.store, job.target)

        async def on_stored(request: ShotRequest, name: str) -> None:
            # The segment is made here, as the clip arrives; the stitch finds it if it runs
            # on this machine, and makes it again from the stored clip if it does not. A
            # take not picked (core/takes.py) is only stored.
            if request.index < len(plan.shots):
                await segment(ctx.db, ctx.store, render_id, assembly, request, name)

        chain = chain_of(plan)
        renderer = Renderer(job.provider, job.caps, ctx.settings, ctx.db, ctx.store, render_id,
                            job.listener, limits, requests, on_stored, chain)
        step = await renderer.advance(index, step)
        if not step.final:
            _send("shotline.shot", render_id, (render_id, index, key, step.to_json()),
                  countdown=step.delay)
            return
        renderer.settle(index, step)
    finally:
        await job.provider.aclose()
    for after in (n for n, (before, _) in chain.items() if before == index):
        # Its continuation now has its first frame (or fails, if this shot failed).
        _send("shotline.shot", render_id, (render_id, after, requests[after].key,
                                           Step().to_json()))
    _fan_in(ctx, render_id)


def _fan_in(ctx: Context, render_id: str) -> None:
    """After a shot's last step: stitch once every shot is stored, or fail on a failed one.

    Every shot's chain looks after committing its own final state, so the last one to
    finish sees every shot final (on SQLite and under READ COMMITTED alike).
    """
    shots = _shots(ctx.db, render_id)
    if any(s.state not in lifecycle.FINAL_SHOT_STATES for s in shots):
        return
    if failed := [s for s in shots if s.state == "failed"]:
        message = failure_message([f"shot {s.idx + 1}: {s.error}" for s in failed],
                                  sum(1 for s in shots if s.state != "failed"), len(shots))
        _fail(render_id, message, only_from=("rendering",))
        return
    _send("shotline.stitch", render_id, (render_id,))


async def _stitch(render_id: str) -> None:
    ctx = context()
    row = _row(ctx.db, render_id)
    if row is None or row.status not in ("rendering", "stitching"):
        return
    shots = _shots(ctx.db, render_id)
    if any(s.state not in ("done", "cached") for s in shots):
        return  # a shot is still being made (a re-roll, say): its chain fans in
    owner = calls.new_owner()
    lease = ctx.settings.visibility_timeout
    with ctx.db.write() as conn:
        busy_until = lifecycle.claim_stitch(conn, render_id, owner, lease)
    if busy_until is not None:  # another task stitches: look again when its lease lapses
        _send("shotline.stitch", render_id, (render_id,), countdown=busy_until - time.time() + 1)
        return
    job, plan = _job(ctx, row, owner=owner)
    try:
        await stitch(plan, job, render_id, row.key, [s.key for s in shots[:len(plan.shots)]])
    except RenderStopped as exc:
        log.info("render %s: %s", render_id, exc)
    except ShotlineError as exc:  # e.g. a clip went missing, or the output did not verify
        log.warning("render %s failed: %s", render_id, exc)
        _fail(render_id, str(exc), owner=owner)
    finally:
        await job.provider.aclose()


def _fail(render_id: str, message: str, *, owner: str | None = None,
          only_from: tuple[str, ...] | None = None) -> None:
    ctx = context()
    with ctx.db.write() as conn:
        if lifecycle.transition(conn, render_id, "failed", owner=owner, error=message,
                                cost_usd=ledger.billed(conn, render_id), only_from=only_from,
                                base_url=ctx.settings.public_url):
            ledger.settle(conn, render_id)
