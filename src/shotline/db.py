"""The database: schema, migrations and the two kinds of transaction.

Embedded default: SQLite in WAL mode at ``$SHOTLINE_HOME/shotline.db``. Any SQLAlchemy
URL works (``SHOTLINE_DATABASE_URL``), so the same code runs on Postgres.

Invariants:

* Every read-then-write runs in :meth:`Database.write`, which on SQLite starts with
  ``BEGIN IMMEDIATE``: the write lock is taken before the first read, so two processes
  can never both read "not claimed yet" and both claim. A busy timeout makes waiters
  queue instead of failing with ``database is locked``.
* Migrations are named, ordered functions recorded in ``schema_migrations``; they run
  once, in one transaction each, when a process opens the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine


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
    sa.Column("quality", sa.JSON),  # added by m004: the output's quality flags
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
    sa.Column("quality", sa.JSON),  # added by m004: the clip's quality flags
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
    sa.Column("render_id", sa.String(40)),
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

SERVICE_TABLES = (tenants, api_keys, idempotency_keys, render_events, media, webhook_endpoints,
                  webhook_events, webhook_deliveries, webhook_attempts)
SERVICE_COLUMNS = {
    renders: ("tenant_id", "options", "webhook_url", "auto_approve", "max_usd", "lease_owner",
              "lease_until", "review_note"),
    render_shots: ("progress",),
}

migrations_table = sa.Table(
    "schema_migrations", meta,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("applied_at", sa.Float, nullable=False),
)


def m001_initial(conn: Connection) -> None:
    later = (migrations_table, vendor_events, *SERVICE_TABLES)
    meta.create_all(conn, tables=[t for t in meta.sorted_tables if t not in later])


def m002_vendor_events(conn: Connection) -> None:
    vendor_events.create(conn)


def m003_service(conn: Connection) -> None:
    # A database made by this version's m001 already has the new columns.
    for table, names in SERVICE_COLUMNS.items():
        have = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        for name in (n for n in names if n not in have):
            kind = table.c[name].type.compile(conn.dialect)
            default = " NOT NULL DEFAULT FALSE" if name == "auto_approve" else ""
            conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}{default}"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_renders_tenant_id ON renders (tenant_id)"))
    meta.create_all(conn, tables=list(SERVICE_TABLES))


def m004_quality(conn: Connection) -> None:
    # A database made by this version's m001 already has the columns.
    for table in (renders, render_shots):
        if "quality" not in {c["name"] for c in sa.inspect(conn).get_columns(table.name)}:
            kind = table.c.quality.type.compile(conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN quality {kind}"))


MIGRATIONS: list[Callable[[Connection], None]] = [m001_initial, m002_vendor_events, m003_service,
                                                   m004_quality]


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    # Autocommit at the driver level, so that BEGIN IMMEDIATE below is the only BEGIN.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")  # first, so the pragmas below wait too
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def insert_ignoring_duplicates(conn: Connection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert unless a unique key already holds the row; True if this call wrote it."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table).values(**values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing()
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

    def migrate(self) -> None:
        with self.write() as conn:
            migrations_table.create(conn, checkfirst=True)
            done = {r[0] for r in conn.execute(sa.select(migrations_table.c.name))}
            for step in MIGRATIONS:
                if step.__name__ not in done:
                    step(conn)
                    conn.execute(migrations_table.insert().values(
                        name=step.__name__, applied_at=time.time()))

    def close(self) -> None:
        self.engine.dispose()
