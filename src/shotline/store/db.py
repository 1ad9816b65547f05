"""The database: schema, migrations, locks and the two kinds of transaction.

Embedded default: SQLite in WAL mode at ``$SHOTLINE_HOME/shotline.db``. Any SQLAlchemy
URL works (``SHOTLINE_DATABASE_URL``); Postgres is the one the scale-out path is tested on.

Invariants:

* Every read-then-write runs in :meth:`Database.write`. On SQLite that transaction starts
  with ``BEGIN IMMEDIATE``: the one write lock of the file is taken before the first read,
  so every writer is serialised and two processes can never both read "not claimed yet"
  and both claim. A busy timeout makes waiters queue instead of failing.
* Postgres runs many writers at once (READ COMMITTED), so a read-then-write that guards
  money or a claim must also call :func:`lock` with the scope it guards: a
  transaction-scoped advisory lock, held until commit or rollback, under which every
  statement sees what the previous holder committed. On SQLite :func:`lock` does nothing,
  because the write lock already covers every scope. The scopes, and who takes them:

  ==========================  =====================================================
  ``schema``                  :meth:`Database.migrate`
  ``call:<shot key>``         the singleflight claim (``calls.claim``)
  ``render-key:<key>``        opening or resuming a CLI render (``lifecycle.open_render``)
  ``budget:render:<id>``      a render's own reservation (``ledger.reserve``)
  ``budget:tenant:<id>``      a tenant's daily and monthly caps (``ledger.reserve``)
  ``budget:global``           the operator's daily and monthly caps (``ledger.reserve``)
  ``endpoints:<tenant>``      the count of a tenant's webhook endpoints
  ``slots:<provider>``        a provider's concurrency slots (``slots.acquire``)
  ==========================  =====================================================

  A row that several processes may write at once (a clip several renders fetched, an
  output) is written with :func:`upsert`, one statement. Row locks
  (``SELECT ... FOR UPDATE``) guard single rows: a render's state changes
  (``lifecycle.transition``), worker leases and webhook delivery claims (``SKIP LOCKED``).
  To stay free of deadlocks, a transaction takes a render's row lock before any budget
  scope, and budget scopes in the order of the table above (render, tenant, global).
* The schema is versioned by Alembic (``store/migrations``; each step is frozen DDL). A
  process opening the database brings it to the newest version under the ``schema`` lock;
  a new database is created from the models and stamped, and an upgrade test checks that
  the steps and the models agree.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration. A database at this version needs no migrating, and opening one
# costs a single query; tests check it against the scripts.
HEAD = "0007"
# Applied steps of the schema_migrations table used before Alembic, and the Alembic
# revision each set stands for.
LEGACY = {"m001_initial": "0001", "m002_vendor_events": "0002", "m003_service": "0003"}


class Money(sa.types.TypeDecorator[Decimal]):
    """USD as whole micro-dollars: exact in every database, summable in SQL."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> int | None:
        return None if value is None else int((Decimal(value) * MICRO).to_integral_value())

    def process_result_value(self, value: int | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value) / MICRO


MICRO = Decimal(1_000_000)
meta = sa.MetaData()

renders = sa.Table(
    "renders", meta,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(80), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("model", sa.String(120), nullable=False),
    sa.Column("brief", sa.Text, nullable=False),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("output", sa.Text),
    sa.Column("seconds", sa.Float),
    sa.Column("estimate_usd", Money(), nullable=False),
    sa.Column("cost_usd", Money(), nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Added by m003 for the service; NULL tenant means a render made from the CLI or library.
    sa.Column("tenant_id", sa.String(40), index=True),
    sa.Column("options", sa.JSON),
    sa.Column("webhook_url", sa.Text),
    sa.Column("auto_approve", sa.Boolean, nullable=False, default=False),
    sa.Column("max_usd", Money()),
    sa.Column("lease_owner", sa.String(80)),
    sa.Column("lease_until", sa.Float),
    sa.Column("review_note", sa.Text),
    sa.Column("quality", sa.JSON),  # the output's quality flags (0005)
)

render_shots = sa.Table(
    "render_shots", meta,
    sa.Column("render_id", sa.String(40), sa.ForeignKey("renders.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(80), nullable=False, index=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("cached", sa.Boolean, nullable=False, default=False),
    sa.Column("cost_usd", Money(), nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("progress", sa.Float),  # added by m003
    sa.Column("quality", sa.JSON),  # the clip's quality flags (0005)
)

# One row per shot key being made or made: the singleflight claim and the recovery point.
calls = sa.Table(
    "calls", meta,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("model", sa.String(120), nullable=False),
    sa.Column("job", sa.JSON),
    sa.Column("owner", sa.String(80)),
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
)

clips = sa.Table(
    "clips", meta,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("model", sa.String(120), nullable=False),
    sa.Column("cost_usd", Money(), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=False),
)

outputs = sa.Table(
    "outputs", meta,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("render_id", sa.String(40), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

ledger = sa.Table(
    "ledger", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("render_id", sa.String(40), index=True),  # what a render billed (0004)
    sa.Column("shot_key", sa.String(80), nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("model", sa.String(120), nullable=False),
    sa.Column("provider_job_id", sa.String(200), nullable=False),
    sa.Column("seconds_billed", sa.Integer, nullable=False),
    sa.Column("audio", sa.Boolean, nullable=False),
    sa.Column("unit_price", Money(), nullable=False),
    sa.Column("amount", Money(), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.UniqueConstraint("provider", "provider_job_id", name="ledger_one_row_per_job"),
)

reservations = sa.Table(
    "reservations", meta,
    sa.Column("render_id", sa.String(40), primary_key=True),
    sa.Column("amount", Money(), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)

savings = sa.Table(
    "savings", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("render_id", sa.String(40), nullable=False),
    sa.Column("shot_key", sa.String(80), nullable=False),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("model", sa.String(120), nullable=False),
    sa.Column("amount", Money(), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Input images a brief names (cast pictures, first and last frames), by the hash of their
# bytes (0006). In the database, not on a disk, so every worker of a render can read them.
images = sa.Table(
    "images", meta,
    sa.Column("sha256", sa.String(80), primary_key=True),
    sa.Column("mime", sa.String(40), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Per-provider concurrency across workers: one leased row per shot key in flight (0007).
slots = sa.Table(
    "slots", meta,
    sa.Column("holder", sa.String(80), primary_key=True),
    sa.Column("provider", sa.String(40), nullable=False, index=True),
    sa.Column("lease_until", sa.Float, nullable=False),
)

# Inbound vendor webhook deliveries already seen, so a redelivery is recognised.
vendor_events = sa.Table(
    "vendor_events", meta,
    sa.Column("provider", sa.String(40), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("job_id", sa.String(200), nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
)

# --- the service (m003) ---------------------------------------------------------------

tenants = sa.Table(
    "tenants", meta,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("webhook_secret", sa.String(100), nullable=False),
    sa.Column("daily_budget_usd", Money()),
    sa.Column("monthly_budget_usd", Money()),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Only a SHA-256 of each key is kept; ``prefix`` is the visible start, for lists and logs.
api_keys = sa.Table(
    "api_keys", meta,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(40), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
)

idempotency_keys = sa.Table(
    "idempotency_keys", meta,
    sa.Column("tenant_id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(80), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("body", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
)

# Each step a render takes (state changes and progress), read by the SSE stream.
render_events = sa.Table(
    "render_events", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("render_id", sa.String(40), nullable=False, index=True),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Files served by the API, under random tokens: a token cannot be guessed or walked.
media = sa.Table(
    "media", meta,
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(40), index=True),
    sa.Column("render_id", sa.String(40), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

webhook_endpoints = sa.Table(
    "webhook_endpoints", meta,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("disabled_at", sa.Float),
    sa.Column("disabled_reason", sa.Text),
)

# The outbox: an event is written in the same transaction as the state change it reports.
webhook_events = sa.Table(
    "webhook_events", meta,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("tenant_id", sa.String(40), index=True),
    sa.Column("render_id", sa.String(40), nullable=False, index=True),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# One row per (event, target URL); ``endpoint_id`` NULL means the render's own webhook_url,
# signed with the tenant's secret.
webhook_deliveries = sa.Table(
    "webhook_deliveries", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(40), sa.ForeignKey("webhook_events.id"), nullable=False),
    sa.Column("endpoint_id", sa.String(40)),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.Float, nullable=False, index=True),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("event_id", "url", name="one_delivery_per_event_and_url"),
)

webhook_attempts = sa.Table(
    "webhook_attempts", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("webhook_deliveries.id"), nullable=False,
              index=True),
    sa.Column("attempted_at", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("seconds", sa.Float, nullable=False),
)

def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    # Autocommit at the driver level, so that BEGIN IMMEDIATE below is the only BEGIN.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")  # first, so the pragmas below wait too
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def lock(conn: Connection, *scopes: str) -> None:
    """Hold ``scopes`` until this transaction ends (Postgres); a no-op on SQLite.

    Each scope is a transaction-scoped advisory lock on a 64-bit number derived from its
    name; scopes are taken in the order given (see the module docstring for the order).
    """
    if conn.dialect.name != "postgresql":
        return
    for scope in scopes:
        number = struct.unpack(">q", hashlib.sha256(scope.encode()).digest()[:8])[0]
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:n)"), {"n": number})


def _insert(conn: Connection, table: sa.Table, values: dict[str, Any]) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).values(**values)


def upsert(conn: Connection, table: sa.Table, values: dict[str, Any],
           keep: tuple[str, ...] = ()) -> None:
    """Insert the row, or update the one its primary key already names, in one statement.

    Two processes writing the same row at once both succeed (the second one's values win),
    where a read-then-insert would fail one of them on Postgres. ``keep`` names columns an
    update leaves as they were (a creation time, say).
    """
    key = [c.name for c in table.primary_key.columns]
    changed = {k: v for k, v in values.items() if k not in key and k not in keep}
    conn.execute(_insert(conn, table, values).on_conflict_do_update(
        index_elements=key, set_=changed))


def insert_ignoring_duplicates(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert unless a unique key already holds the row; True if this call wrote it."""
    stmt = _insert(conn, table, values).on_conflict_do_nothing()
    # SQLAlchemy keeps an INSERT's rowcount only when asked: psycopg would report -1, and
    # a lost race would read as won.
    return bool(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount)



class Database:
    """An engine plus the transaction helpers every module uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", self._begin_immediate)
        self.migrate()

    @staticmethod
    def _begin_immediate(conn: Connection) -> None:
        # Readers need no lock under WAL; writers take it before their first read.
        read_only = conn.get_execution_options().get("shotline_read", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    @classmethod
    def for_home(cls, home: Path, url: str | None = None) -> Database:
        if url:
            return cls(url)
        home.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{home / 'shotline.db'}")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that holds the write lock from its first statement."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot under WAL)."""
        with self.engine.connect().execution_options(shotline_read=True) as conn, conn.begin():
            yield conn

    def ping(self) -> None:
        """One round trip to the database (raises if it cannot be reached)."""
        with self.read() as conn:
            conn.execute(sa.text("SELECT 1"))

    def migrate(self) -> None:
        """Bring the schema to :data:`HEAD`, once, whichever process gets there first."""
        with self.write() as conn:
            lock(conn, "schema")
            inspector = sa.inspect(conn)
            if inspector.has_table("alembic_version"):
                version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
                if version == HEAD:
                    return
                _upgrade(conn)
            elif inspector.has_table("schema_migrations"):  # made before Alembic was used
                done = {r[0] for r in conn.execute(sa.text("SELECT name FROM schema_migrations"))}
                _upgrade(conn, stamp=max(LEGACY[name] for name in done))
                conn.execute(sa.text("DROP TABLE schema_migrations"))
            else:
                # A new database: made from the models in one go, then stamped. The upgrade
                # test checks that the steps arrive at the same schema.
                meta.create_all(conn)
                _stamp_new(conn)

    def close(self) -> None:
        self.engine.dispose()


def _stamp_new(conn: Connection) -> None:
    """Record :data:`HEAD` in a new database as Alembic would, without loading Alembic."""
    version = sa.Table("alembic_version", sa.MetaData(),
                       sa.Column("version_num", sa.String(32), nullable=False),
                       sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
    version.create(conn)
    conn.execute(version.insert().values(version_num=HEAD))


def _upgrade(conn: Connection, stamp: str | None = None) -> None:
    """Run the Alembic steps after the database's version (first recording ``stamp``)."""
    from alembic import command  # only when a schema changes: opening a current one is cheap
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    if stamp is not None:
        command.stamp(config, stamp)
    command.upgrade(config, "head")
