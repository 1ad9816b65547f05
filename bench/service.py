"""The service answers at once and renders in the background, side by side in one run.

Starts `shotline serve` in a process of its own on the local provider (with a per-job
latency standing in for a vendor's minutes), then measures over real HTTP:

* accepting a render (`POST /v1/renders`: plan, price, reserve, queue) against a bare
  `GET /healthz`, the cost of HTTP and the database round trip alone;
* the time from the 202 to `awaiting_review`, against the accept time;
* 20 concurrent POSTs with one Idempotency-Key (one render, the rest replay or 409);
* reopening under load: 50 clients each reading, as fast as they can, a finished render
  (`GET /v1/renders/{id}`), its poster (`GET /v1/media/...`) and `/healthz`, one endpoint at
  a time: p50, p99 and requests per second, and each p99 as a ratio to `/healthz`'s.

    .venv/bin/python bench/service.py [--latency 3] [--posts 20] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
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
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=9.0, help="Load per endpoint.")
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
            url = f"http://127.0.0.1:{port}"
            render_id = run(url, key, args.posts)
            asyncio.run(reopen(url, key, render_id, args.clients, args.seconds))
        finally:
            server.terminate()
            server.wait(30)


def run(url: str, key: str, posts: int) -> str:
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
    for view in listed:  # nothing left rendering while reopening is measured
        while api.get(f"/v1/renders/{view['id']}").json()["status"] in ("queued", "rendering",
                                                                        "stitching"):
            time.sleep(0.1)
    api.close()
    return ids[0]


async def load(url: str, headers: dict[str, str], clients: int, seconds: float,
               ) -> tuple[list[float], float]:
    """Latencies of every request ``clients`` concurrent clients made in ``seconds``."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
        await client.get(url)  # warm the connection pool and any server caches
        stop = time.perf_counter() + seconds

        async def one() -> None:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                answer = await client.get(url)
                assert answer.status_code == 200, answer.text[:200]
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        wall = time.perf_counter() - start
    return latencies, wall


async def reopen(url: str, key: str, render_id: str, clients: int, seconds: float) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=auth) as api:
        view = (await api.get(f"/v1/renders/{render_id}")).json()
    targets = [("/healthz", f"{url}/healthz"),
               ("GET /v1/renders/{id}", f"{url}/v1/renders/{render_id}"),
               ("GET poster (/v1/media)", url + view["poster_url"])]
    rounds = 3
    print(f"\nreopening under load: {clients} clients, {rounds} rounds of {seconds / rounds:g} s "
          "per endpoint, taken in turn")
    seen: dict[str, tuple[list[float], float]] = {name: ([], 0.0) for name, _ in targets}
    for _ in range(rounds):  # in turn, so a change in the machine's load falls on all three
        for name, target in targets:
            latencies, wall = await load(target, auth, clients, seconds / rounds)
            seen[name] = (seen[name][0] + latencies, seen[name][1] + wall)
    base_p99 = None
    for name, (latencies, wall) in seen.items():
        latencies.sort()
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        base_p99 = base_p99 or p99
        print(f"  {name:24} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
              f"{len(latencies) / wall:7.0f} req/s   p99 / healthz p99 {p99 / base_p99:5.2f}")


if __name__ == "__main__":
    main()
