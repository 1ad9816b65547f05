"""Alembic's entry point for shotline's schema.

shotline runs its migrations itself, when a process opens the database
(:meth:`shotline.store.db.Database.migrate`), on the connection and inside the
transaction it already holds with the migration lock. So this only configures the context
for that connection; there is no URL here and no ``alembic.ini``. For a developer writing
a new step: ``alembic -c <a throwaway ini with script_location = this folder> revision``.
"""

from __future__ import annotations

from alembic import context

from shotline.store.db import meta

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=meta,
    # SQLite alters tables by copying them; batch mode does that for the ops that need it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
