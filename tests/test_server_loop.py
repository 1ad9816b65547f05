"""The server's event loop never waits on the database: a held write lock stalls nobody.

Another connection holds SQLite's write lock while the in-process worker keeps trying to
claim work (each try waits on that lock). The worker runs on a thread of its own, so the
server still answers `/healthz` and reads while the lock is held: the answer must arrive
before the lock is let go, not after.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from .service import running, service_settings

pytestmark = pytest.mark.slow


def test_a_held_write_lock_does_not_stall_the_server(tmp_path: Path) -> None:
    settings = service_settings(tmp_path / "h")
    with running(settings) as server:
        key = server.new_key().key
        api = server.client(key)
        assert api.get("/healthz").json()["worker"] is True
        assert api.get("/v1/renders").status_code == 200  # the key is fresh: no write below
        held, answered, released = threading.Event(), threading.Event(), threading.Event()

        def hold() -> None:
            conn = sqlite3.connect(settings.home / "shotline.db", timeout=30,
                                   isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            answered.wait(20)  # long enough for a stalled server to show it
            conn.execute("ROLLBACK")
            conn.close()
            released.set()

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        try:
            threading.Event().wait(1.0)  # the worker is now waiting on the lock
            health = api.get("/healthz")
            listing = api.get("/v1/renders")
            still_held = not released.is_set()
        finally:
            answered.set()
            holder.join(30)
        assert health.status_code == 200 and listing.status_code == 200
        assert still_held, "the server answered only after the lock was released"
