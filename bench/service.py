"""The service answers at once and renders in the background, side by side in one run.

Starts `shotline serve` in a process of its own on the local provider (with a per-job
latency standing in for a vendor's minutes), then measures over real HTTP:

* accepting a render (`POST /v1/renders`: plan, price, reserve, queue) against a bare
  `GET /healthz`, the cost of HTTP and the database round trip alone;
* the time from the 202 to `awaiting_review`, against the accept time;
* 20 concurrent POSTs with one Idempotency-Key (one render, the rest replay or 409).

    .venv/bin/python bench/service.py [--latency 3] [--posts 20]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shotline.api import open_store
from shotline.service import tenants
from shotline.settings import Settings

BRIEF = "Shot {n}: A red kite rises over hill {n}.\n\nShot 2: The string snaps.\n"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _median_ms(fn: object, n: int) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=3.0)
    parser.add_argument("--posts", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        db, _ = open_store(Settings(home=home))
        key = tenants.create_key(db, "bench").key
        db.close()
        port = _port()
        env = {**os.environ, "SHOTLINE_HOME": tmp, "SHOTLINE_LOCAL_LATENCY": str(args.latency),
               "SHOTLINE_POLL_INTERVAL": "0.1"}
        server = subprocess.Popen([sys.executable, "-m", "shotline", "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run(f"http://127.0.0.1:{port}", key, args.posts)
        finally:
            server.terminate()
            server.wait(30)


def run(url: str, key: str, posts: int) -> None:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    deadline = time.monotonic() + 30
    while True:
        try:
            api.get("/healthz")
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
    health = _median_ms(lambda _: api.get("/healthz"), posts)
    ids: list[str] = []

    def post(i: int) -> None:
        answer = api.post("/v1/renders", json={"brief": BRIEF.format(n=i), "seconds": 8,
                                               "size": "640x360"})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])

    accept = _median_ms(post, posts)
    print(f"GET /healthz median          {health:8.1f} ms")
    print(f"POST /v1/renders median      {accept:8.1f} ms   ratio {accept / health:6.1f}")

    start = time.perf_counter()
    for render_id in ids:
        while (status := api.get(f"/v1/renders/{render_id}").json()["status"]) in (
                "queued", "rendering", "stitching"):
            time.sleep(0.1)
        assert status == "awaiting_review", f"render {render_id} ended {status}"
    drained = time.perf_counter() - start
    print(f"{posts} renders done after       {drained:8.1f} s    "
          f"(accepting one took {accept / 1000 / drained:.5f} of that)")

    def same(_: int) -> int:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}",
                                                 "Idempotency-Key": "bench"}, timeout=60) as c:
            return c.post("/v1/renders", json={"brief": "Shot 1: One kite.", "seconds": 4}).status_code

    with concurrent.futures.ThreadPoolExecutor(posts) as pool:
        codes = list(pool.map(same, range(posts)))
    listed = api.get("/v1/renders", params={"limit": 100}).json()["data"]
    print(f"{posts} concurrent POSTs, one key: {codes.count(202)} x 202, {codes.count(409)} x 409, "
          f"renders made: {len(listed) - len(ids)}")
    api.close()


if __name__ == "__main__":
    main()
