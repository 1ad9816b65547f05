from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shotline.store.db import Database

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SHOTLINE_HOME, so no test sees another's state, and runs in
    a directory of its own (``shotline render`` writes ``./<brief name>.mp4`` there)."""
    home = tmp_path / "home"
    monkeypatch.setenv("SHOTLINE_HOME", str(home))
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # beside tmp_path: tests list it
    for var in ("SHOTLINE_LOCAL_FAULTS", "SHOTLINE_LOCAL_LATENCY", "SHOTLINE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    return home


def pg_urls() -> list[str]:
    """CI runs Postgres on localhost (trust auth); SHOTLINE_TEST_POSTGRES_URL points elsewhere."""
    if url := os.environ.get("SHOTLINE_TEST_POSTGRES_URL"):
        return [url]
    return [f"postgresql+psycopg://{user}@127.0.0.1:5432/test" for user in ("postgres", "root")]


def _pg_admin() -> tuple[str, sa.Engine]:
    """The first URL that logs in; a reachable server that refuses every user is a failure."""
    error: Exception | None = None
    for url in pg_urls():
        engine = sa.create_engine(url)
        try:
            engine.connect().close()
            return url, engine
        except sa.exc.OperationalError as exc:
            engine.dispose()
            error = exc
    assert error is not None
    raise error


@contextmanager
def pg_schema() -> Iterator[str]:
    """The URL of a new Postgres schema, dropped on the way out.

    Postgres is part of the test run, not an optional extra: `.ci/run` starts it, and a
    server that cannot be reached fails the test with the reason instead of skipping it.
    """
    where = sa.make_url(pg_urls()[0])
    host, port = where.host or "127.0.0.1", where.port or 5432
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"no Postgres server at {host}:{port} ({exc}): start it (scripts/test.sh "
                    "does) or point SHOTLINE_TEST_POSTGRES_URL at one")
    url, admin = _pg_admin()
    schema = "test_" + uuid.uuid4().hex[:12]
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    in_schema = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield in_schema.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a Postgres schema of this test's own, dropped afterwards."""
    with pg_schema() as url:
        yield url


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    """A Database on a Postgres schema of its own."""
    database = Database(pg_url)
    yield database
    database.close()


def example(name: str) -> Path:
    """An example brief shipped with the project."""
    return EXAMPLES / name


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL of this test's own, once on SQLite and once on Postgres."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    (tmp_path / "db").mkdir(exist_ok=True)
    return f"sqlite:///{tmp_path / 'db' / 'shotline.db'}"


@pytest.fixture
def any_db(db_url: str) -> Iterator[Database]:
    """A migrated Database, once on SQLite and once on Postgres."""
    database = Database(db_url)
    yield database
    database.close()


# --- the scale-out stack: S3 (moto), Redis, Postgres and Celery worker processes ------------


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One S3-compatible server (moto's server mode) on loopback for the session; each
    test makes a bucket of its own."""
    from .scaleout import s3_server

    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def broker() -> Iterator[Any]:
    """The machine's Redis under a key prefix of this test's own (deleted afterwards)."""
    from .scaleout import redis_broker

    with redis_broker() as found:
        yield found


@pytest.fixture(params=["embedded", "scaleout"])
def stack(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Runs the service the way a test asks, once on the embedded default (SQLite, local
    files, the worker inside the API process) and once scaled out (Postgres, Redis, S3, the
    API only enqueuing, and a Celery worker process with an empty home of its own).

    ``stack(**settings)`` is a context manager giving a ``tests.service.Server``.
    """
    from .scaleout import CREDENTIALS, celery_worker, stack_env
    from .service import running, service_settings

    if request.param == "embedded":
        return lambda **kw: running(service_settings(tmp_path / "h", **kw))
    if request.param == "embedded-postgres":
        url = request.getfixturevalue("pg_url")
        return lambda **kw: running(service_settings(tmp_path / "h", database_url=url, **kw))
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    s3, found = request.getfixturevalue("s3"), request.getfixturevalue("broker")
    env = stack_env(database_url=request.getfixturevalue("pg_url"), broker=found, s3=s3,
                    bucket=s3.new_bucket(), local_dir=tmp_path / "vendor")

    @contextmanager
    def scaled(**kw: Any) -> Iterator[Any]:
        for name, value in kw.items():
            env["SHOTLINE_" + name.upper()] = str(value)
        values = {k.removeprefix("SHOTLINE_").lower(): v for k, v in env.items()
                  if k.startswith("SHOTLINE_")}
        settings = service_settings(tmp_path / "api", **values)
        with celery_worker(tmp_path / "w1", env, tmp_path / "worker.log"), \
                running(settings) as server:
            yield server

    return scaled
