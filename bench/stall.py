"""Does a held database lock stall the server? p99 of /healthz with and without one.

Starts `shotline serve` (its worker in the same process, on SQLite) and measures, in one
run, the latency of `GET /healthz` while nothing holds the database, and while another
connection holds SQLite's write lock for 3 s at a time (the worker, trying to claim work,
waits on it). The server's event loop must not wait with it: goal p99 under 50 ms under
the lock, and under 3x the p99 without it.

    .venv/bin/python bench/stall.py [--holds 5] [--hold 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from shotline.api import open_store
from shotline.settings import Settings


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def _probe(api: httpx.Client, until: float) -> list[float]:
    times = []
    while time.monotonic() < until:
        start = time.perf_counter()
        api.get("/healthz").raise_for_status()
        times.append(time.perf_counter() - start)
        time.sleep(0.01)
    return times


def _hold(home: Path, seconds: float, held: threading.Event) -> None:
    """Hold SQLite's write lock for ``seconds``, as a long writer in another process would."""
    conn = sqlite3.connect(home / "shotline.db", timeout=60, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    held.set()
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--holds", type=int, default=5, help="how many times the lock is held")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds each hold lasts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        open_store(Settings(home=home))[0].close()
        port = _port()
        env = {**os.environ, "SHOTLINE_HOME": tmp}
        server = subprocess.Popen([sys.executable, "-m", "shotline", "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    api.get("/healthz")
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.1)
            free: list[float] = []
            locked: list[float] = []
            for _ in range(args.holds):
                free += _probe(api, time.monotonic() + args.hold)
                held = threading.Event()
                holder = threading.Thread(target=_hold, args=(home, args.hold, held))
                holder.start()
                held.wait()
                locked += _probe(api, time.monotonic() + args.hold - 0.1)
                holder.join()
        finally:
            api.close()
            server.terminate()
            server.wait(30)
    no_lock, under_lock = _p(free, 99), _p(locked, 99)
    print(f"GET /healthz p99, nothing held        {no_lock:8.1f} ms  ({len(free)} requests)")
    print(f"GET /healthz p99, write lock held {args.hold:g} s {under_lock:8.1f} ms  "
          f"({len(locked)} requests)   ratio {under_lock / no_lock:5.2f}   (goal < 50 ms, < 3)")


if __name__ == "__main__":
    main()
