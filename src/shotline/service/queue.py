"""Handing runnable renders to workers, whichever engine runs them (``SHOTLINE_QUEUE``).

* ``inline`` (the default): nothing to send. Workers (the one inside ``shotline serve``,
  and any ``shotline worker``) claim queued and re-rolled renders from the database.
* ``celery``: the render's start task is published to the broker inside the transaction
  that made the render runnable (see :mod:`.tasks`): if the broker does not take it, the
  request fails with :class:`~shotline.errors.QueueError` and nothing is written.
"""

from __future__ import annotations

from ..errors import QueueError
from ..settings import Settings


def dispatch(settings: Settings, render_id: str, key: str, *, resume: bool = False) -> None:
    """Send a render that was just queued or re-rolled to the workers, if they need telling;
    ``resume`` (a requeued render) sends only its shots that are not over."""
    if settings.queue != "celery":
        return
    from . import tasks

    tasks.configure(settings)
    try:
        tasks.dispatch(render_id, key, resume=resume)
    except Exception as exc:  # kombu raises its transport's errors
        where = tasks.redacted(settings.broker_url or "")
        raise QueueError(f"the task queue's broker at {where} did not take the render "
                         f"({type(exc).__name__}); nothing was queued: try again") from None


def revoke(settings: Settings, render_id: str) -> None:
    """Drop a cancelled render's queued tasks (the tasks check the render's state anyway)."""
    if settings.queue != "celery":
        return
    from . import tasks

    tasks.configure(settings)
    tasks.revoke(render_id)
