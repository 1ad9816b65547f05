"""The render state machine, its event log, and the queue workers claim renders from.

States: ``queued -> rendering -> stitching -> awaiting_review -> published | rejected``,
plus ``failed`` and ``cancelled``. Invariants:

* Every state change goes through :func:`transition`, in the caller's transaction, and
  only along :data:`MOVES`; a refused move changes nothing and returns False.
* The same transaction appends the change to ``render_events`` (the SSE stream) and, for
  the states a customer is told about, writes the webhook into the outbox: a state that
  committed has its event, and an event always has its state.
* Locks (see db.py): a transition reads the render ``FOR UPDATE``; opening a CLI render
  takes ``render-key:<key>``; a worker claims a render with ``FOR UPDATE SKIP LOCKED``;
  renewing and releasing a lease are single conditional updates.
* A worker holds a render through a lease (``lease_owner``, ``lease_until``) renewed by
  heartbeats. A lease lapses when it is not renewed or when its owner's process is gone;
  another worker then resumes the render, and the first one's late writes are fenced off
  (a transition passed ``owner=`` only applies while that owner holds the lease).
"""

from __future__ import annotations

import secrets
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.capabilities import PREVIEW_MODEL
from . import calls, outbox
from .cache import Store
from .db import Database, lock, media, render_events, render_shots, renders

MOVES: dict[str, frozenset[str]] = {
    "queued": frozenset({"rendering", "failed", "cancelled"}),
    "rendering": frozenset({"rendering", "stitching", "failed", "cancelled"}),
    "stitching": frozenset({"rendering", "awaiting_review", "failed", "cancelled"}),
    "awaiting_review": frozenset({"published", "rejected", "rendering"}),
    "failed": frozenset({"rendering"}),
    "published": frozenset(),
    "rejected": frozenset(),
    "cancelled": frozenset(),
}
ACTIVE = ("queued", "rendering", "stitching")
EVENT_PAGE = 500  # events read at once for the event stream
WEBHOOK_EVENTS = {
    "awaiting_review": "render.awaiting_review",
    "published": "render.published",
    "rejected": "render.rejected",
    "failed": "render.failed",
    "cancelled": "render.cancelled",
}
MEDIA_KINDS = {"output": "", "poster": ".poster.jpg", "contact_sheet": ".contact.jpg"}
FINAL_SHOT_STATES = ("done", "cached", "failed")


def transition(conn: Connection, render_id: str, status: str, *, owner: str | None = None,
               base_url: str = "", now: float | None = None,
               only_from: tuple[str, ...] | None = None, **values: Any) -> bool:
    """Move a render to ``status`` if that move is allowed (and, with ``only_from``, the
    render is in one of those states); False (and no change) if not."""
    now = now or time.time()
    # The row lock makes the check and the move one step: a cancel and a worker's move
    # cannot both pass the check against the same old status.
    row = conn.execute(sa.select(renders).where(renders.c.id == render_id)
                       .with_for_update()).first()
    if row is None or status not in MOVES[row.status]:
        return False
    if only_from is not None and row.status not in only_from:
        return False
    if owner is not None and row.lease_owner != owner:
        return False  # our lease lapsed and another worker took the render over
    if status == "awaiting_review" and row.auto_approve:
        status = "published"
    if status not in ACTIVE:
        values.update(lease_owner=None, lease_until=None)
    conn.execute(renders.update().where(renders.c.id == render_id)
                 .values(status=status, updated_at=now, **values))
    output = values.get("output", row.output)
    if status in ("awaiting_review", "published") and output:
        _publish_media(conn, row, Path(output), now)
    view = describe(conn, render_id, base_url)
    append_event(conn, render_id, "status", {"status": status, "error": view["error"]}, now)
    if status in WEBHOOK_EVENTS:  # a transition never changes who is told
        target = {"id": row.id, "tenant_id": row.tenant_id, "webhook_url": row.webhook_url}
        outbox.emit(conn, target, WEBHOOK_EVENTS[status], view, now=now)
    return True


def append_event(conn: Connection, render_id: str, kind: str, data: dict[str, Any],
                 now: float | None = None) -> None:
    conn.execute(render_events.insert().values(render_id=render_id, type=kind, data=data,
                                               created_at=now or time.time()))


def has_event(conn: Connection, render_id: str, kind: str, data: dict[str, Any]) -> bool:
    """Whether the render's log has an event of ``kind`` whose data includes ``data``."""
    rows = conn.execute(sa.select(render_events.c.data).where(
        render_events.c.render_id == render_id, render_events.c.type == kind))
    return any(all((r.data or {}).get(k) == v for k, v in data.items()) for r in rows)


def shot_progress(conn: Connection, render_id: str, index: int, state: str,
                  progress: float | None, message: str = "") -> None:
    """Record a shot's state and progress, and log it for the event stream.

    A final state is the renderer's to write (``set_shot``), and progress never moves a
    shot out of one: a second task making the same shot (a redelivered step) cannot make a
    finished shot look unfinished to the fan-in.
    """
    if state not in FINAL_SHOT_STATES:
        conn.execute(render_shots.update().where(
            render_shots.c.render_id == render_id, render_shots.c.idx == index,
            render_shots.c.state.not_in(FINAL_SHOT_STATES)).values(state=state,
                                                                   progress=progress))
    append_event(conn, render_id, "shot", {"index": index + 1, "state": state,
                                           "progress": progress, "message": message})


def events_after(conn: Connection, render_id: str, after: int) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(
        sa.select(render_events).where(render_events.c.render_id == render_id,
                                       render_events.c.id > after)
        .order_by(render_events.c.id).limit(EVENT_PAGE))]


def _publish_media(conn: Connection, row: Any, output: Path, now: float) -> None:
    """Give the output and its stills random tokens to be served under (once per object).

    ``output`` is the output's name in the store; its stills were stored before it.
    """
    have = {r.path for r in conn.execute(sa.select(media.c.path)
                                         .where(media.c.render_id == row.id))}
    wanted = [(kind, str(output.with_name(output.stem + suffix) if suffix else output))
              for kind, suffix in MEDIA_KINDS.items()]
    # The reviewer plays every shot on its own, and every take of a shot with several.
    wanted += [("clip", Store.clip_name(r.key)) for r in conn.execute(
        sa.select(render_shots.c.key).where(render_shots.c.render_id == row.id)
        .order_by(render_shots.c.idx))]
    for kind, path in wanted:
        if path in have:
            continue
        have.add(path)
        conn.execute(media.insert().values(
            token="m_" + secrets.token_urlsafe(32), tenant_id=row.tenant_id, render_id=row.id,
            kind=kind, path=path, created_at=now))


def _slots(plan: dict[str, Any] | None) -> list[tuple[int, int]]:
    """(shot index, take) of every slot of a render, as core/takes.py lays them out."""
    shots = (plan or {}).get("shots", [])
    out = [(i, s["take"]) for i, s in enumerate(shots)]
    out += [(i, t) for i, s in enumerate(shots) for t in s.get("takes") or () if t != s["take"]]
    return out


def lay_out(conn: Connection, render_id: str, keys: list[str]) -> None:
    """Make the render's shot rows hold ``keys``, slot by slot (a pick or a re-roll moved
    them; see core/takes.py). A key that had a row keeps its state, cost and flags in its
    new slot; a new key starts pending. Only while no worker makes the render's shots."""
    old: dict[str, dict[str, Any]] = {}
    for r in conn.execute(sa.select(render_shots).where(render_shots.c.render_id == render_id)
                          .order_by(render_shots.c.idx)):
        old.setdefault(r.key, dict(r._mapping))
    conn.execute(render_shots.delete().where(render_shots.c.render_id == render_id))
    fresh = {"state": "pending", "cached": False, "cost_usd": 0, "error": None,
             "progress": None, "quality": None}
    conn.execute(render_shots.insert(), [
        {**fresh, **(old.get(k) or {}), "render_id": render_id, "idx": i, "key": k}
        for i, k in enumerate(keys)])


# --- render rows ---------------------------------------------------------------------------


def new_render_id() -> str:
    return "r_" + uuid.uuid4().hex[:16]


def open_render(conn: Connection, key: str, model: str, brief: str, plan: dict[str, Any],
                shot_keys: list[str], estimate: Decimal, max_usd: Decimal | None = None) -> str:
    """Create a render row, or reuse an unfinished one with the same key (a resumed run)."""
    now = time.time()
    lock(conn, f"render-key:{key}")  # two processes opening one brief share one row
    row = conn.execute(sa.select(renders.c.id).where(
        renders.c.key == key, renders.c.status.in_(("rendering", "stitching", "failed")))
        .order_by(renders.c.created_at.desc())).first()
    if row is not None:
        conn.execute(renders.update().where(renders.c.id == row.id).values(
            status="rendering", error=None, updated_at=now, estimate_usd=estimate,
            max_usd=max_usd))
        return str(row.id)
    render_id = new_render_id()
    conn.execute(renders.insert().values(
        id=render_id, key=key, status="rendering", model=model, brief=brief, plan=plan,
        estimate_usd=estimate, cost_usd=0, created_at=now, updated_at=now, max_usd=max_usd))
    conn.execute(render_shots.insert(), [
        {"render_id": render_id, "idx": i, "key": k, "state": "pending", "cached": False,
         "cost_usd": 0} for i, k in enumerate(shot_keys)])
    return render_id


def set_shot(conn: Connection, render_id: str, idx: int, **values: Any) -> None:
    conn.execute(render_shots.update().where(render_shots.c.render_id == render_id,
                                             render_shots.c.idx == idx).values(**values))


def begin_shots(conn: Connection, render_id: str, indices: list[int]) -> None:
    """Mark the shots a run is about to make as pending (their earlier errors are over)."""
    if indices:
        conn.execute(render_shots.update().where(render_shots.c.render_id == render_id,
                                                 render_shots.c.idx.in_(indices))
                     .values(state="pending", progress=None, error=None))


def unfinished_shots(conn: Connection, render_id: str) -> list[int]:
    """The shots of a render still being made (what its reservation must still cover)."""
    return [r.idx for r in conn.execute(
        sa.select(render_shots.c.idx).where(render_shots.c.render_id == render_id,
                                            render_shots.c.state.not_in(FINAL_SHOT_STATES)))]


def shot_state(conn: Connection, render_id: str, idx: int) -> str | None:
    """The state of shot ``idx`` of a render (None: no such shot)."""
    state: str | None = conn.execute(sa.select(render_shots.c.state).where(
        render_shots.c.render_id == render_id, render_shots.c.idx == idx)).scalar()
    return state


def set_render(conn: Connection, render_id: str, **values: Any) -> None:
    conn.execute(renders.update().where(renders.c.id == render_id)
                 .values(updated_at=time.time(), **values))


def output_quality(conn: Connection, render_id: str) -> list[dict[str, Any]]:
    """The quality flags recorded on a render's output, as stored (JSON)."""
    stored = conn.execute(sa.select(renders.c.quality).where(renders.c.id == render_id)).scalar()
    return list(stored or [])


def finish_shared(conn: Connection, render_id: str, status: str, **values: Any) -> bool:
    """Set the status of a render several CLI processes run, unless it is closed."""
    closed = ("cancelled", "rejected", "published")
    return bool(conn.execute(renders.update().where(renders.c.id == render_id,
                                                    renders.c.status.not_in(closed))
                             .values(status=status, updated_at=time.time(), **values)).rowcount)


def tenant_of(conn: Connection, render_id: str) -> tuple[bool, str | None]:
    """(whether the render exists, its tenant)."""
    row = conn.execute(sa.select(renders.c.tenant_id).where(renders.c.id == render_id)).first()
    return (False, None) if row is None else (True, row.tenant_id)


def status_of(conn: Connection, render_id: str) -> str | None:
    status = conn.execute(sa.select(renders.c.status).where(renders.c.id == render_id)).scalar()
    return None if status is None else str(status)


def page(conn: Connection, tenant: str, limit: int, cursor: str | None) -> list[str] | None:
    """Ids of a tenant's renders, newest first, after ``cursor`` (None if no such cursor);
    one more than ``limit`` when there is a next page."""
    query = (sa.select(renders.c.id, renders.c.created_at)
             .where(renders.c.tenant_id == tenant)
             .order_by(renders.c.created_at.desc(), renders.c.id.desc()).limit(limit + 1))
    if cursor:
        after = conn.execute(sa.select(renders.c.created_at).where(
            renders.c.id == cursor, renders.c.tenant_id == tenant)).first()
        if after is None:
            return None
        query = query.where(sa.or_(
            renders.c.created_at < after.created_at,
            sa.and_(renders.c.created_at == after.created_at, renders.c.id < cursor)))
    return [r.id for r in conn.execute(query)]


def media_item(conn: Connection, token: str) -> Any:
    """The media row a token names (render, tenant, kind and object name), or None."""
    return conn.execute(sa.select(media).where(media.c.token == token)).first()


def list_renders(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(renders.c.id, renders.c.status, renders.c.model, renders.c.seconds,
                      renders.c.cost_usd, renders.c.estimate_usd, renders.c.output,
                      renders.c.created_at, renders.c.error)
            .order_by(renders.c.created_at.desc()).limit(limit))]


def get_render(db: Database, render_id: str) -> dict[str, Any] | None:
    with db.read() as conn:
        row = conn.execute(sa.select(renders).where(renders.c.id == render_id)).first()
        if row is None:
            return None
        shots = [dict(r._mapping) for r in conn.execute(
            sa.select(render_shots).where(render_shots.c.render_id == render_id)
            .order_by(render_shots.c.idx))]
    return {**dict(row._mapping), "shots": shots}


def is_preview(conn: Connection, row: Any) -> bool:
    """Whether a render's shots are drawn by the free local renderer for another model.

    A service render says so in its options; a library or CLI render (no options) is
    known by the model that made its clips, so a re-roll never bills a preview's shots.
    """
    if row.options is not None:
        return bool(row.options.get("preview"))
    return row.model != PREVIEW_MODEL and PREVIEW_MODEL in calls.drawn_by(conn, row.id)


# --- the view every face shows ------------------------------------------------------------


def money(value: Decimal | None) -> str | None:
    """USD as a decimal string: JSON numbers would round micro-dollar amounts."""
    return None if value is None else format(Decimal(value).normalize(), "f")


_SHOT_COLUMNS = [render_shots.c[name].label(f"shot_{name}")
                 for name in ("idx", "key", "state", "progress", "cached", "cost_usd", "error",
                              "quality")]


def _media_token(kind: str) -> Any:
    """The token of the render's current output (or of one of its stills), if it has one."""
    # Outputs are <key>.mp4 in the store and their stills <key>.poster.jpg and so on, so the
    # current ones are found from the output's path; the earlier cuts' files keep their tokens.
    suffix = MEDIA_KINDS[kind]
    path = renders.c.output if not suffix else (
        sa.func.substr(renders.c.output, 1, sa.func.length(renders.c.output) - 4) + suffix)
    return (sa.select(media.c.token)
            .where(media.c.render_id == renders.c.id, media.c.kind == kind, media.c.path == path)
            .order_by(media.c.created_at.desc()).limit(1)
            .scalar_subquery().label(f"{kind}_token"))


def view(conn: Connection, render_id: str, base_url: str = "") -> tuple[str | None, dict[str, Any]] | None:
    """The render's owner (tenant) and view, in one indexed query; None if there is no render."""
    rows = conn.execute(
        sa.select(renders, *_SHOT_COLUMNS, *(_media_token(kind) for kind in MEDIA_KINDS))
        .select_from(renders.outerjoin(render_shots, render_shots.c.render_id == renders.c.id))
        .where(renders.c.id == render_id).order_by(render_shots.c.idx)).all()
    if not rows:
        return None
    row = rows[0]
    planned = (row.plan or {}).get("shots", [])
    links = {"self": f"{base_url}/v1/renders/{row.id}",
             "events": f"{base_url}/v1/renders/{row.id}/events"}
    urls = {f"{kind}_url": (f"{base_url}/v1/media/{token}" if (token := row._mapping[f"{kind}_token"])
                            else None) for kind in MEDIA_KINDS}
    shots = [r for r in rows if r.shot_idx is not None]
    slots = _slots(row.plan)
    # Each shot's clip, and each take's, get a link once the render is stitched.
    tokens = {m.path: m.token for m in conn.execute(
        sa.select(media.c.path, media.c.token).where(media.c.render_id == row.id,
                                                     media.c.kind == "clip"))}

    def clip_url(key: str) -> str | None:
        token = tokens.get(Store.clip_name(key))
        return f"{base_url}/v1/media/{token}" if token else None

    takes: dict[int, list[dict[str, Any]]] = {}
    for s in shots:
        if s.shot_idx >= len(slots) or not planned[slots[s.shot_idx][0]].get("takes"):
            continue
        index, take = slots[s.shot_idx]
        takes.setdefault(index, []).append({
            "take": take, "picked": s.shot_idx < len(planned), "state": s.shot_state,
            "cached": s.shot_cached, "cost_usd": money(s.shot_cost_usd),
            "error": s.shot_error, "key": s.shot_key, "url": clip_url(s.shot_key)})
    for listed in takes.values():
        listed.sort(key=lambda t: t["take"])
    return row.tenant_id, {
        "id": row.id, "status": row.status, "model": row.model,
        "created_at": row.created_at, "updated_at": row.updated_at,
        "estimate_usd": money(row.estimate_usd), "cost_usd": money(row.cost_usd),
        "seconds": row.seconds, "error": row.error, "review_note": row.review_note,
        "auto_approve": bool(row.auto_approve), "webhook_url": row.webhook_url,
        **urls,
        "quality": row.quality or [],
        "shots": [{
            "index": s.shot_idx + 1, "state": s.shot_state, "progress": s.shot_progress,
            "cached": s.shot_cached, "cost_usd": money(s.shot_cost_usd), "error": s.shot_error,
            "prompt": planned[s.shot_idx]["prompt"] if s.shot_idx < len(planned) else None,
            "seconds": planned[s.shot_idx]["seconds"] if s.shot_idx < len(planned) else None,
            "take": planned[s.shot_idx]["take"] if s.shot_idx < len(planned) else None,
            "continues": bool(planned[s.shot_idx].get("continues"))
            if s.shot_idx < len(planned) else False,
            "quality": s.shot_quality or [],
            "clip_url": clip_url(s.shot_key),
            "takes": takes.get(s.shot_idx, []),
        } for s in shots if s.shot_idx < len(planned) or not planned],
        "links": links,
    }


def describe(conn: Connection, render_id: str, base_url: str = "") -> dict[str, Any]:
    """A render as the API, webhooks and ``shotline show --json`` present it."""
    found = view(conn, render_id, base_url)
    if found is None:
        raise LookupError(f"no render {render_id!r}")
    return found[1]


# --- the queue -------------------------------------------------------------------------------


def enqueue(conn: Connection, *, tenant: str | None, key: str, model: str, brief: str,
            plan: dict[str, Any], shot_keys: list[str], estimate: Decimal,
            options: dict[str, Any], webhook_url: str | None, auto_approve: bool,
            max_usd: Decimal | None, now: float | None = None) -> str:
    """Create a queued render and its shots; the caller reserves its budget in the same txn."""
    now = now or time.time()
    render_id = new_render_id()
    conn.execute(renders.insert().values(
        id=render_id, key=key, status="queued", model=model, brief=brief, plan=plan,
        estimate_usd=estimate, cost_usd=0, created_at=now, updated_at=now, tenant_id=tenant,
        options=options, webhook_url=webhook_url, auto_approve=auto_approve, max_usd=max_usd))
    conn.execute(render_shots.insert(), [
        {"render_id": render_id, "idx": i, "key": k, "state": "pending", "cached": False,
         "cost_usd": 0} for i, k in enumerate(shot_keys)])
    append_event(conn, render_id, "status", {"status": "queued", "error": None}, now)
    return render_id


def finished_twin(conn: Connection, tenant: str | None, key: str) -> str | None:
    """A render of this tenant with the same key that already has its output."""
    row = conn.execute(sa.select(renders.c.id).where(
        renders.c.key == key, renders.c.tenant_id == tenant,
        renders.c.status.in_(("awaiting_review", "published")))
        .order_by(renders.c.created_at.desc())).first()
    return None if row is None else str(row.id)


def _lease_free(row: Any, now: float) -> bool:
    if row.lease_owner is None or (row.lease_until or 0) < now:
        return True
    # Same host and the process is gone: no need to wait for the lease to run out.
    return not calls.owner_alive(row.lease_owner, now, now)


def claim_next(conn: Connection, owner: str, lease: float, now: float | None = None,
               skip: frozenset[str] = frozenset()) -> str | None:
    """Take the oldest service render nobody holds; None if there is none."""
    now = now or time.time()
    query = (sa.select(renders.c.id, renders.c.lease_owner, renders.c.lease_until)
             .where(renders.c.status.in_(ACTIVE), renders.c.options.is_not(None))
             .order_by(renders.c.created_at).limit(50))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    for row in conn.execute(query):
        if row.id in skip or not _lease_free(row, now):
            continue
        conn.execute(renders.update().where(renders.c.id == row.id)
                     .values(lease_owner=owner, lease_until=now + lease))
        return str(row.id)
    return None


def renew(conn: Connection, render_id: str, owner: str, lease: float,
          now: float | None = None) -> str | None:
    """Extend our lease; the render's status, or None if the lease is no longer ours."""
    now = now or time.time()
    done = conn.execute(renders.update().where(renders.c.id == render_id,
                                               renders.c.lease_owner == owner)
                        .values(lease_until=now + lease)).rowcount
    if not done:
        return None
    return str(conn.execute(sa.select(renders.c.status)
                            .where(renders.c.id == render_id)).scalar_one())


def claim_stitch(conn: Connection, render_id: str, owner: str, lease: float,
                 now: float | None = None) -> float | None:
    """Take the right to stitch a render whose shots are all stored: one conditional
    update, so of two tasks racing (a redelivered one, say) one gets it. None if we have
    it; else when the holder's lease runs out (a task should look again then)."""
    now = now or time.time()
    got = conn.execute(renders.update().where(
        renders.c.id == render_id, renders.c.status.in_(("rendering", "stitching")),
        sa.or_(renders.c.lease_owner.is_(None), renders.c.lease_until < now))
        .values(lease_owner=owner, lease_until=now + lease)).rowcount
    if got:
        return None
    until = conn.execute(sa.select(renders.c.lease_until)
                         .where(renders.c.id == render_id)).scalar()
    return float(until or now)


def stalled(conn: Connection, before: float) -> list[str]:
    """Unfinished service renders whose last event is older than ``before`` (a render
    being made writes events at every step, so silence means its tasks were lost)."""
    last = sa.func.max(render_events.c.created_at)
    return [r.id for r in conn.execute(
        sa.select(renders.c.id).join(render_events, render_events.c.render_id == renders.c.id)
        .where(renders.c.status.in_(ACTIVE), renders.c.options.is_not(None))
        .group_by(renders.c.id).having(last < before))]


def take_stalled(conn: Connection, render_id: str, before: float) -> str | None:
    """Mark a stalled render as being sent again, once: under its row lock, if it is still
    silent, log a ``requeue`` event (so the next look finds it live) and return its key."""
    row = conn.execute(sa.select(renders.c.key, renders.c.status).where(
        renders.c.id == render_id).with_for_update()).first()
    last = conn.execute(sa.select(sa.func.max(render_events.c.created_at))
                        .where(render_events.c.render_id == render_id)).scalar()
    if row is None or row.status not in ACTIVE or (last or 0) >= before:
        return None
    append_event(conn, render_id, "requeue", {"reason": "no progress"})
    return str(row.key)


def release(conn: Connection, render_id: str, owner: str) -> None:
    conn.execute(renders.update().where(renders.c.id == render_id,
                                        renders.c.lease_owner == owner)
                 .values(lease_owner=None, lease_until=None))
