"""Stateful property test: any sequence of worker steps and review actions, in any order,
keeps every render on the state machine and emits each webhook event exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import sqlalchemy as sa
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shotline.api import open_store
from shotline.core.capabilities import load_table
from shotline.errors import StateError
from shotline.service import actions
from shotline.settings import Settings
from shotline.store import lifecycle
from shotline.store.db import renders, webhook_events

BRIEFS = ["Shot 1: A kite.\n\nShot 2: A hill.", "Shot 1: A boat.\n\nShot 2: A gull."]


class Renders(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = TemporaryDirectory()
        self.settings = Settings(home=Path(self.tmp.name))
        self.db, self.store = open_store(self.settings)
        self.table = load_table(self.settings.overrides_path)
        self.expected: dict[str, str] = {}
        self.entered: Counter[tuple[str, str]] = Counter()

    def teardown(self) -> None:
        self.db.close()
        self.tmp.cleanup()

    @rule(brief=st.sampled_from(BRIEFS), seed=st.integers(0, 3))
    def submit(self, brief: str, seed: int) -> None:
        req = actions.RenderRequest(brief=brief, seconds=4, seed=seed,
                                    webhook_url="https://example.com/hook")
        view, created = asyncio.run(actions.submit(
            self.db, self.settings, self.table, "t_1", req,
            resolver=lambda host, port: _public()))
        if created:
            self.expected[view["id"]] = "queued"

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data(), step=st.sampled_from(["rendering", "stitching", "awaiting_review",
                                                 "failed"]))
    def worker_step(self, data: st.DataObject, step: str) -> None:
        render_id = data.draw(st.sampled_from(sorted(self.expected)))
        with self.db.write() as conn:
            moved = lifecycle.transition(conn, render_id, step,
                                         **({"output": None} if step == "awaiting_review" else {}))
        allowed = step in lifecycle.MOVES[self.expected[render_id]]
        assert moved == allowed
        if moved:
            self._enter(render_id, step)

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data(), action=st.sampled_from(["approve", "reject", "cancel"]))
    def review(self, data: st.DataObject, action: str) -> None:
        render_id = data.draw(st.sampled_from(sorted(self.expected)))
        target = {"approve": "published", "reject": "rejected", "cancel": "cancelled"}[action]
        before = self._events()
        try:
            if action == "approve":
                actions.approve(self.db, "t_1", render_id)
            elif action == "reject":
                actions.reject(self.db, "t_1", render_id, "no")
            else:
                asyncio.run(actions.cancel(self.db, self.settings, self.table, "t_1", render_id))
        except StateError:
            assert target not in lifecycle.MOVES[self.expected[render_id]]
            assert self._events() == before  # a refused action changes nothing
            return
        assert target in lifecycle.MOVES[self.expected[render_id]]
        self._enter(render_id, target)

    def _enter(self, render_id: str, status: str) -> None:
        self.expected[render_id] = status
        if status in lifecycle.WEBHOOK_EVENTS:
            self.entered[(render_id, lifecycle.WEBHOOK_EVENTS[status])] += 1

    def _events(self) -> Counter[tuple[str, str]]:
        with self.db.read() as conn:
            return Counter((r.render_id, r.type) for r in conn.execute(
                sa.select(webhook_events.c.render_id, webhook_events.c.type)))

    @invariant()
    def states_and_events_agree(self) -> None:
        with self.db.read() as conn:
            actual = dict(conn.execute(sa.select(renders.c.id, renders.c.status)).all())
        assert actual == self.expected
        assert self._events() == self.entered


async def _public() -> list[str]:
    return ["93.184.215.14"]


TestRenders = Renders.TestCase
TestRenders.settings = hsettings(max_examples=25, stateful_step_count=15, deadline=None)
