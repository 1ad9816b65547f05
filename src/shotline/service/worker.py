"""The worker: claims queued renders, runs them, and delivers webhooks.

``shotline serve`` runs one inside the HTTP process; ``shotline worker`` runs one alone,
and any number can share a database. Invariants:

* A worker only runs a render it holds the lease on, renews the lease while it runs, and
  stops the render at once if the lease is lost or the render is cancelled.
* A worker killed mid-render leaves its calls at their recovery points (calls.py): the next
  worker to claim the render resumes polling, or reconciles, and never pays twice.
* On a clean stop (SIGTERM, Ctrl-C) the running renders are interrupted and their leases
  released, so another worker resumes them right away instead of after the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import sqlalchemy as sa

from ..api import open_store
from ..core.capabilities import table_for
from ..core.planner import Plan
from ..engine.renderer import RenderFailed, RenderJob, RenderStopped, ShotEvent, render_plan
from ..errors import BudgetError, ShotlineError
from ..providers.plugins import load_provider
from ..settings import Settings
from ..store import calls, ledger, lifecycle
from ..store.db import Database, renders
from . import actions, webhooks

log = logging.getLogger(__name__)
TICK = 0.25  # seconds between looks at the queue when idle


class ProgressLog:
    """Writes shot progress for the event stream, at most about once a second per shot."""

    def __init__(self, db: Database, render_id: str) -> None:
        self.db = db
        self.render_id = render_id
        self.last: dict[int, tuple[str, float, float]] = {}

    def __call__(self, event: ShotEvent) -> None:
        now = time.monotonic()
        state, progress, at = self.last.get(event.index, ("", -1.0, 0.0))
        changed = event.state != state or abs((event.progress or 0) - progress) >= 0.1
        if not changed and now - at < 1.0:
            return
        self.last[event.index] = (event.state, event.progress or 0, now)
        with self.db.write() as conn:
            if event.index < 0:
                lifecycle.append_event(conn, self.render_id, "stitch",
                                       {"state": event.state, "message": event.message})
            else:
                lifecycle.shot_progress(conn, self.render_id, event.index, event.state,
                                        event.progress, event.message)


class Worker:
    """One process's worker; ``run`` until ``stop`` is set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db, self.store = open_store(settings)
        self.store.sweep()  # what a killed worker was writing
        self.owner = calls.new_owner()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started", self.owner)
        deliveries = asyncio.create_task(self._deliver_loop(stop))
        try:
            while not stop.is_set():
                self._claim()
                self.wake.clear()
                waiters = [asyncio.create_task(e.wait()) for e in (stop, self.wake)]
                await asyncio.wait(waiters, timeout=TICK, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            await self._shutdown(deliveries)

    async def _shutdown(self, deliveries: asyncio.Task[None]) -> None:
        deliveries.cancel()
        for task in self.running.values():
            task.cancel()
        await asyncio.gather(deliveries, *self.running.values(), return_exceptions=True)
        self.db.close()
        log.info("worker %s stopped", self.owner)

    def _claim(self) -> None:
        while len(self.running) < self.settings.worker_renders:
            with self.db.write() as conn:
                render_id = lifecycle.claim_next(conn, self.owner, self.settings.lease_seconds,
                                                 skip=frozenset(self.running))
            if render_id is None:
                return
            log.info("claimed render %s", render_id)
            task = asyncio.create_task(self._hold(render_id))
            self.running[render_id] = task
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for render_id, t in list(self.running.items()):
            if t is task:
                del self.running[render_id]

    async def _deliver_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await webhooks.deliver_due(self.db, self.settings)
            except Exception:  # a broken receiver or database hiccup must not stop the worker
                log.exception("webhook delivery round failed")
                sent = 0
            if not sent:
                await asyncio.sleep(TICK * 2)

    async def _hold(self, render_id: str) -> None:
        """Run one render under a renewed lease; stop it if cancelled or taken over."""
        task = asyncio.create_task(self._render(render_id))
        beat = min(self.settings.lease_seconds / 4, 1.0)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=beat)
                if task.done():
                    break
                with self.db.write() as conn:
                    status = lifecycle.renew(conn, render_id, self.owner,
                                             self.settings.lease_seconds)
                if status is None or status not in lifecycle.ACTIVE:
                    log.info("render %s is %s: stopping it", render_id, status or "taken over")
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    if status == "cancelled":
                        table = table_for(self.settings.overrides_path)
                        await actions.cancel_vendor_jobs(self.db, self.settings, table, render_id)
            await task
        except asyncio.CancelledError:  # the worker is stopping: let another resume it
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            with self.db.write() as conn:
                lifecycle.release(conn, render_id, self.owner)
            raise

    async def _render(self, render_id: str) -> None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(renders).where(renders.c.id == render_id)).one()
        try:
            await self._render_row(row)
        except (RenderFailed, RenderStopped, BudgetError) as exc:  # already moved to failed
            log.info("render %s: %s", render_id, exc)
        except ShotlineError as exc:  # e.g. the stitch failed, or a key went missing
            log.warning("render %s failed: %s", render_id, exc)
            self._fail(render_id, str(exc))
        except Exception as exc:
            log.exception("render %s failed unexpectedly", render_id)
            self._fail(render_id, f"internal error: {type(exc).__name__}")

    async def _render_row(self, row: Any) -> None:
        table = table_for(self.settings.overrides_path)
        caps = table.drawing(table.get(row.model), preview=bool((row.options or {}).get("preview")))
        provider = load_provider(caps.provider, self.settings)
        job = RenderJob(
            caps=caps, provider=provider, settings=self.settings, db=self.db, store=self.store,
            brief_text=row.brief, max_usd=row.max_usd, listener=ProgressLog(self.db, row.id),
            render_id=row.id, owner=self.owner, base_url=self.settings.public_url,
            loudness=(row.options or {}).get("loudness"))
        try:
            await render_plan(Plan.model_validate(row.plan), job)
        finally:
            await provider.aclose()

    def _fail(self, render_id: str, message: str) -> None:
        with self.db.write() as conn:
            lifecycle.transition(conn, render_id, "failed", owner=self.owner, error=message,
                                 cost_usd=ledger.billed(conn, render_id),
                                 base_url=self.settings.public_url)
            ledger.settle(conn, render_id)


class Background:
    """A worker on a thread of its own, with its own event loop, for ``shotline serve``.

    The worker's database calls, ffmpeg runs and file copies block its loop while they
    last; on a thread of its own they never hold up the HTTP server's loop.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.thread = threading.Thread(target=self._run, name="shotline-worker", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        self.thread.start()
        self._started.wait()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the worker to stop (its renders are released for others) and wait for it."""
        if self._loop is not None and self._stop is not None and self.thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._started.set()
            await Worker(self.settings).run(self._stop)

        try:
            asyncio.run(main())
        except Exception:  # the server stays up to answer; /healthz reports the worker gone
            log.exception("the in-process worker stopped")
        finally:
            self._started.set()


def run_forever(settings: Settings) -> None:
    """``shotline worker``: run until SIGINT or SIGTERM."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Worker(settings).run(stop)

    asyncio.run(main())
