from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import standardwebhooks

from shotline.errors import UnsafeURLError, UserError
from shotline.service import webhooks
from shotline.service.webhooks import SCHEDULE, deliver_due, deliveries
from shotline.settings import Settings
from shotline.store import outbox
from shotline.store.db import (
    Database,
    renders,
    tenants,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
)
from shotline.store.outbox import emit

TENANT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK = "https://hooks.example/in"


async def stub(host: str, port: int) -> list[str]:
    return {"hooks.example": ["93.184.215.14"], "other.example": ["93.184.215.15"],
            "inside.example": ["10.0.0.9"]}[host]


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Script:
    """A receiver behind httpx.MockTransport: answers in turn, the last one from then on."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers) or [httpx.Response(200)]
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        # A fresh copy each time: a response's body can be streamed only once.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database.for_home(settings.home)
    yield database
    database.close()


def add_tenant(db: Database, tenant_id: str = "t_1", secret: str = TENANT_SECRET) -> None:
    with db.write() as conn:
        conn.execute(tenants.insert().values(id=tenant_id, name=tenant_id, webhook_secret=secret,
                                             created_at=time.time()))


def add_render(db: Database, render_id: str = "r_1", tenant_id: str | None = "t_1",
               webhook_url: str | None = HOOK) -> dict[str, Any]:
    with db.write() as conn:
        conn.execute(renders.insert().values(
            id=render_id, key="k", status="queued", model="local/preview", brief="A cat.",
            plan={}, estimate_usd=0, created_at=0.0, updated_at=0.0, tenant_id=tenant_id,
            webhook_url=webhook_url))
    return {"id": render_id, "tenant_id": tenant_id, "webhook_url": webhook_url}


def emit_one(db: Database, render: dict[str, Any], now: float, type: str = "render.published",
             ) -> str | None:
    with db.write() as conn:
        return emit(conn, render, type, {"id": render["id"], "status": "published"}, now=now)


def run(db: Database, settings: Settings, clock: Clock, script: Script, **kw: Any) -> int:
    return asyncio.run(deliver_due(db, settings, now=clock, transport=script.transport,
                                   resolver=stub, **kw))


def only_delivery(db: Database, tenant_id: str = "t_1") -> dict[str, Any]:
    (found,) = deliveries(db, tenant_id)
    return found


def count(db: Database, table: sa.Table) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# --- signing and the outbox ------------------------------------------------------------------


def test_standard_webhooks_vector() -> None:
    signature = webhooks.sign(TENANT_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                              '{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_event_ids_are_standard_and_unique() -> None:
    ids = {outbox.new_event_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(i.startswith("msg_") and len(i) == 28 and "." not in i for i in ids)


def test_emit_writes_the_exact_payload_and_one_delivery_per_url(db: Database) -> None:
    add_tenant(db)
    render = add_render(db)
    now = 1_700_000_000.25
    with db.write() as conn:
        conn.execute(webhook_endpoints.insert(), [
            {"id": "we_a", "tenant_id": "t_1", "url": "https://other.example/a", "secret": "whsec_a",
             "created_at": 1.0, "disabled_at": None},
            {"id": "we_same", "tenant_id": "t_1", "url": HOOK, "secret": "whsec_b",
             "created_at": 2.0, "disabled_at": None},
            {"id": "we_off", "tenant_id": "t_1", "url": "https://other.example/off",
             "secret": "whsec_c", "created_at": 3.0, "disabled_at": 4.0},
        ])
    event_id = emit_one(db, render, now)
    with db.read() as conn:
        event = conn.execute(sa.select(webhook_events)).one()
        rows = conn.execute(sa.select(webhook_deliveries).order_by(webhook_deliveries.c.id)).all()
    assert event.id == event_id and event.render_id == "r_1" and event.tenant_id == "t_1"
    assert event.payload == ('{"type":"render.published","timestamp":"2023-11-14T22:13:20.250Z",'
                             '"data":{"id":"r_1","status":"published"}}')
    assert [(r.endpoint_id, r.url, r.state, r.attempts, r.next_attempt_at) for r in rows] == [
        (None, HOOK, "pending", 0, now), ("we_a", "https://other.example/a", "pending", 0, now)]


def test_emit_without_tenant_or_receiver_writes_nothing(db: Database) -> None:
    add_tenant(db)
    assert emit_one(db, add_render(db, "r_cli", tenant_id=None), 1.0) is None
    assert emit_one(db, add_render(db, "r_quiet", webhook_url=None), 1.0) is None
    assert count(db, webhook_events) == 0 and count(db, webhook_deliveries) == 0


def test_emit_in_a_rolled_back_transaction_leaves_nothing(db: Database) -> None:
    add_tenant(db)
    render = add_render(db)
    with pytest.raises(RuntimeError), db.write() as conn:
        assert emit(conn, render, "render.failed", {"id": "r_1"}, now=1.0)
        raise RuntimeError("the state change failed")
    assert count(db, webhook_events) == 0 and count(db, webhook_deliveries) == 0


# --- delivery to a real receiver -------------------------------------------------------------


class Receiver:
    """A local HTTP server that records each request and answers with ``status``."""

    def __init__(self, status: int = 204) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_real_receiver_verifies_the_signature(db: Database) -> None:
    settings = Settings(allow_private_webhooks=True)
    add_tenant(db)
    with Receiver() as receiver:
        render = add_render(db, webhook_url=receiver.url)
        event_id = emit_one(db, render, time.time())
        assert asyncio.run(deliver_due(db, settings)) == 1
    ((headers, body),) = receiver.received
    payload = standardwebhooks.Webhook(TENANT_SECRET).verify(body, headers)
    assert payload["type"] == "render.published" and payload["data"]["id"] == "r_1"
    assert headers["webhook-id"] == event_id
    assert headers["content-type"] == "application/json"
    assert "shotline" in headers["user-agent"]
    found = only_delivery(db)
    assert found["state"] == "delivered" and found["last_status"] == 204
    assert [a["status_code"] for a in found["attempt_log"]] == [204]


def test_private_receiver_is_refused_at_delivery_time(db: Database, settings: Settings) -> None:
    add_tenant(db)
    add_render(db, "r_1", webhook_url="http://10.0.0.1/hook")
    add_render(db, "r_2", webhook_url="https://inside.example/hook")
    emit_one(db, {"id": "r_1", "tenant_id": "t_1", "webhook_url": "http://10.0.0.1/hook"}, 100.0)
    emit_one(db, {"id": "r_2", "tenant_id": "t_1",
                  "webhook_url": "https://inside.example/hook"}, 100.0)
    script = Script()
    assert run(db, settings, Clock(100.0), script) == 2
    assert script.requests == []
    for found in deliveries(db, "t_1"):
        assert found["state"] == "pending" and found["attempts"] == 1
        assert found["last_status"] is None and "private address" in found["last_error"]
        assert found["attempt_log"][0]["error"] == found["last_error"]


# --- retries -----------------------------------------------------------------------------------


def test_retries_follow_the_schedule_with_one_id(db: Database, settings: Settings) -> None:
    add_tenant(db)
    event_id = emit_one(db, add_render(db), 1000.0)
    script = Script(httpx.Response(500, text="boom"), httpx.Response(500), httpx.Response(200))
    clock = Clock(1000.0)
    assert run(db, settings, clock, script) == 1
    assert only_delivery(db)["next_attempt_at"] == 1000.0 + SCHEDULE[1]
    clock.t = 1000.0 + SCHEDULE[1] - 0.5
    assert run(db, settings, clock, script) == 0
    clock.t = 1000.0 + SCHEDULE[1]
    assert run(db, settings, clock, script) == 1
    clock.t += SCHEDULE[2]
    assert run(db, settings, clock, script) == 1
    found = only_delivery(db)
    assert found["state"] == "delivered" and found["attempts"] == 3
    assert found["delivered_at"] == clock.t and found["next_attempt_at"] is None
    assert [a["status_code"] for a in found["attempt_log"]] == [500, 500, 200]
    assert found["attempt_log"][0]["error"] == "HTTP 500: boom"
    assert [r.headers["webhook-id"] for r in script.requests] == [event_id] * 3
    stamps = [int(r.headers["webhook-timestamp"]) for r in script.requests]
    assert stamps == [1000, 1005, 1305]
    signatures = {r.headers["webhook-signature"] for r in script.requests}
    assert len(signatures) == 3
    assert {r.content for r in script.requests} == {script.requests[0].content}
    assert script.requests[0].url.host == "93.184.215.14"
    assert script.requests[0].headers["host"] == "hooks.example"


def test_full_schedule_ends_failed(db: Database, settings: Settings) -> None:
    add_tenant(db)
    emit_one(db, add_render(db), 0.0)
    script, clock = Script(httpx.Response(503)), Clock(0.0)
    for _ in SCHEDULE:
        clock.t = only_delivery(db)["next_attempt_at"]
        assert run(db, settings, clock, script) == 1
    found = only_delivery(db)
    assert found["state"] == "failed" and found["attempts"] == len(SCHEDULE)
    times = [a["attempted_at"] for a in found["attempt_log"]]
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == list(SCHEDULE[1:])
    assert 72 * 3600 < times[-1] < 76 * 3600
    clock.t = 10 * 86400.0
    assert run(db, settings, clock, script) == 0


def test_retry_after_only_postpones(db: Database, settings: Settings) -> None:
    add_tenant(db)
    emit_one(db, add_render(db, "r_1"), 0.0)
    emit_one(db, add_render(db, "r_2", webhook_url="https://other.example/in"), 0.0)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "hooks.example":
            return httpx.Response(429, headers={"retry-after": "600"})
        return httpx.Response(503, headers={"retry-after": "1"})

    asyncio.run(deliver_due(db, settings, now=Clock(0.0), transport=httpx.MockTransport(answer),
                            resolver=stub))
    later = {d["url"]: d["next_attempt_at"] for d in deliveries(db, "t_1")}
    assert later == {HOOK: 600.0, "https://other.example/in": SCHEDULE[1]}


def test_redirect_is_a_failure_and_not_followed(db: Database, settings: Settings) -> None:
    add_tenant(db)
    emit_one(db, add_render(db), 0.0)
    script = Script(httpx.Response(302, headers={"location": "http://169.254.169.254/"}))
    run(db, settings, Clock(0.0), script)
    assert len(script.requests) == 1
    found = only_delivery(db)
    assert found["state"] == "pending" and found["last_status"] == 302
    assert "redirects are not followed" in found["last_error"]


def test_response_body_read_is_capped(db: Database, settings: Settings) -> None:
    add_tenant(db)
    emit_one(db, add_render(db), 0.0)
    run(db, settings, Clock(0.0), Script(httpx.Response(500, content=b"x" * 1_000_000)))
    assert len(only_delivery(db)["last_error"]) <= webhooks.MAX_RESPONSE_BYTES + 20


def test_gone_disables_the_endpoint(db: Database, settings: Settings) -> None:
    add_tenant(db)
    endpoint_id, _ = webhooks.add_endpoint(db, "t_1", "https://other.example/in", settings,
                                           resolver=stub)
    render = add_render(db, webhook_url=None)
    emit_one(db, render, 0.0, "render.awaiting_review")
    emit_one(db, render, 0.0, "render.published")
    script = Script(httpx.Response(410))
    assert run(db, settings, Clock(0.0), script, limit=1) == 1
    (endpoint,) = webhooks.list_endpoints(db, "t_1")
    assert endpoint["id"] == endpoint_id and endpoint["disabled_at"] == 0.0
    assert "410" in endpoint["disabled_reason"]
    assert {d["state"] for d in deliveries(db, "t_1")} == {"failed"}
    assert run(db, settings, Clock(1e6), script) == 0 and len(script.requests) == 1
    assert emit_one(db, render, 2.0, "render.rejected") is None  # no enabled receiver left


def test_gone_for_a_render_url_stops_only_that_delivery(db: Database, settings: Settings) -> None:
    add_tenant(db)
    emit_one(db, add_render(db), 0.0)
    run(db, settings, Clock(0.0), Script(httpx.Response(410)))
    found = only_delivery(db)
    assert found["state"] == "failed" and found["attempts"] == 1
    assert run(db, settings, Clock(1e6), Script()) == 0


def test_concurrent_workers_send_each_attempt_once(db: Database, settings: Settings) -> None:
    add_tenant(db)
    for i in range(8):
        emit_one(db, add_render(db, f"r_{i}"), 0.0)
    seen: list[str] = []
    lock, start = threading.Lock(), threading.Barrier(2)

    def slow(request: httpx.Request) -> httpx.Response:
        with lock:
            seen.append(request.headers["webhook-id"])
        time.sleep(0.05)
        return httpx.Response(200)

    tried: list[int] = []

    def worker() -> None:
        own = Database.for_home(settings.home)  # another connection pool, like another process
        start.wait()
        tried.append(asyncio.run(deliver_due(own, settings, now=Clock(0.0), resolver=stub,
                                             transport=httpx.MockTransport(slow), limit=5)))
        own.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(tried) == [3, 5]
    assert len(seen) == 8 and len(set(seen)) == 8
    assert {d["state"] for d in deliveries(db, "t_1")} == {"delivered"}


# --- endpoints, the log and replay ---------------------------------------------------------------


def test_endpoints_add_list_remove(db: Database, settings: Settings) -> None:
    add_tenant(db)
    add_tenant(db, "t_2")
    endpoint_id, secret = webhooks.add_endpoint(db, "t_1", "https://93.184.215.14/in", settings)
    assert endpoint_id.startswith("we_") and secret.startswith("whsec_")
    (listed,) = webhooks.list_endpoints(db, "t_1")
    assert listed["url"] == "https://93.184.215.14/in" and secret not in json.dumps(listed)
    assert "secret" not in listed
    assert webhooks.list_endpoints(db, "t_2") == []
    assert webhooks.remove_endpoint(db, "t_2", endpoint_id) is False
    assert webhooks.remove_endpoint(db, "t_1", endpoint_id) is True
    assert webhooks.list_endpoints(db, "t_1") == []


def test_add_endpoint_refuses_unsafe_urls_and_unknown_tenants(db: Database,
                                                              settings: Settings) -> None:
    add_tenant(db)
    with pytest.raises(UnsafeURLError, match="169.254.169.254"):
        webhooks.add_endpoint(db, "t_1", "http://169.254.169.254/latest", settings)
    with pytest.raises(UnsafeURLError, match="private"):
        webhooks.add_endpoint(db, "t_1", "https://inside.example/", settings, resolver=stub)
    assert count(db, webhook_endpoints) == 0
    with pytest.raises(UserError, match="no tenant"):
        webhooks.add_endpoint(db, "t_nope", "https://93.184.215.14/", settings)


def test_removed_endpoint_pending_deliveries_fail(db: Database, settings: Settings) -> None:
    add_tenant(db)
    endpoint_id, _ = webhooks.add_endpoint(db, "t_1", "https://93.184.215.14/", settings)
    emit_one(db, add_render(db, webhook_url=None), 0.0)
    webhooks.remove_endpoint(db, "t_1", endpoint_id)
    found = only_delivery(db)
    assert found["state"] == "failed" and found["last_error"] == "endpoint removed"
    assert webhooks.replay(db, "t_1", found["id"]) is False


def test_replay_sends_a_failed_delivery_once_more(db: Database, settings: Settings) -> None:
    add_tenant(db)
    add_tenant(db, "t_2")
    emit_one(db, add_render(db), 0.0)
    clock = Clock(0.0)
    for _ in SCHEDULE:
        clock.t = only_delivery(db)["next_attempt_at"]
        run(db, settings, clock, Script(httpx.Response(500)))
    delivery_id = only_delivery(db)["id"]
    assert webhooks.replay(db, "t_2", delivery_id) is False
    assert webhooks.replay(db, "t_1", delivery_id, now=10**6) is True
    assert only_delivery(db)["state"] == "pending"
    assert webhooks.replay(db, "t_1", delivery_id) is False  # not failed any more
    clock.t = 10**6
    assert run(db, settings, clock, Script(httpx.Response(200))) == 1
    found = only_delivery(db)
    assert found["state"] == "delivered" and found["attempts"] == len(SCHEDULE) + 1


def test_deliveries_are_per_tenant_and_per_render(db: Database) -> None:
    add_tenant(db)
    add_tenant(db, "t_2")
    emit_one(db, add_render(db, "r_1"), 0.0)
    emit_one(db, add_render(db, "r_2"), 1.0)
    emit_one(db, add_render(db, "r_3", tenant_id="t_2"), 2.0)
    assert [d["render_id"] for d in deliveries(db, "t_1")] == ["r_2", "r_1"]
    assert [d["render_id"] for d in deliveries(db, "t_1", "r_1")] == ["r_1"]
    assert deliveries(db, "t_1", "r_3") == []
    (found,) = deliveries(db, "t_2")
    assert set(found) >= {"id", "event_id", "type", "render_id", "url", "state", "attempts",
                          "last_status", "last_error", "next_attempt_at", "delivered_at",
                          "attempt_log"}


def test_an_endless_answer_is_not_read_past_the_cap(db: Database, settings: Settings) -> None:
    sent: list[int] = []

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                sent.append(1024)
                yield b"x" * 1024

    add_tenant(db)
    emit_one(db, add_render(db), 0.0)
    transport = httpx.MockTransport(lambda _: httpx.Response(500, stream=Endless()))
    asyncio.run(deliver_due(db, settings, now=Clock(0.0), transport=transport, resolver=stub))
    assert sum(sent) <= webhooks.MAX_RESPONSE_BYTES + 1024
    assert only_delivery(db)["last_error"] == "HTTP 500: " + "x" * webhooks.MAX_RESPONSE_BYTES


def test_an_outcome_after_the_lease_lapsed_is_not_written(db: Database, settings: Settings) -> None:
    add_tenant(db)
    emit_one(db, add_render(db), 0.0)
    lapsed = settings.webhook_timeout + webhooks.LEASE_GRACE

    def slow_failure(request: httpx.Request) -> httpx.Response:
        # While this answer is late, our lease lapses and another worker delivers.
        other = threading.Thread(target=lambda: asyncio.run(deliver_due(
            db, settings, now=Clock(lapsed), transport=Script().transport, resolver=stub)))
        other.start()
        other.join()
        return httpx.Response(500)

    asyncio.run(deliver_due(db, settings, now=Clock(0.0),
                            transport=httpx.MockTransport(slow_failure), resolver=stub))
    found = only_delivery(db)
    assert found["state"] == "delivered" and found["attempts"] == 1
    assert sorted(a["status_code"] for a in found["attempt_log"]) == [200, 500]
