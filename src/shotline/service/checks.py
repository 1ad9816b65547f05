"""What a process checks when it starts, so bad configuration is one clear error then.

``shotline serve`` and ``shotline worker`` call :func:`check` first: the database answers
(and is migrated), the object store exists and takes our credentials, and with
``SHOTLINE_QUEUE=celery`` the broker answers. Each failure is a ConfigError (exit 2) that
says what was wrong and which setting to change, never a failure on the first render.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from ..api import open_store
from ..errors import ConfigError
from ..settings import Settings


def _where(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL SQLAlchemy cannot even parse: say nothing of it
        return "the configured URL"


def check(settings: Settings) -> None:
    """Raise ConfigError with what to set if this deployment cannot work as configured."""
    try:
        db, store = open_store(settings)
    except SQLAlchemyError as exc:
        where = _where(settings.database_url) if settings.database_url else "SHOTLINE_HOME"
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(f"cannot open the database at {where}: {reason}; fix "
                          "SHOTLINE_DATABASE_URL (or start the database)") from None
    except ModuleNotFoundError as exc:  # a driver the URL names is not installed
        raise ConfigError(f"the database URL needs the {exc.name!r} package: install it, or "
                          "fix SHOTLINE_DATABASE_URL") from None
    try:
        store.blobs.check()
        if settings.queue == "celery":
            from .tasks import check_broker

            check_broker(settings)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"SHOTLINE_STORAGE=s3://... and SHOTLINE_QUEUE=celery need the "
                          f"{exc.name!r} package: pip install 'shotline[scale]'") from None
    finally:
        db.close()
