"""The HTTP service over a real socket, with its in-process worker and the local provider."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from shotline.api import open_store
from shotline.providers.local import read_journal
from shotline.service import tenants
from shotline.store.db import calls, renders, reservations

from .service import BRIEF, receiver, running, service_settings, wait_status, wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stack", ["embedded", "embedded-postgres", "scaleout"], indirect=True)
def test_post_to_published_with_signed_webhooks(stack: Callable[..., Any]) -> None:
    with stack() as server, receiver() as hook:
        key = server.new_key()
        api = server.client(key.key)
        answer = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 4, "size": "640x360",
                                               "webhook_url": hook.url})
        assert answer.status_code == 202, answer.text
        render = answer.json()
        assert render["status"] == "queued" and render["estimate_usd"] == "0"
        assert render["links"]["self"] == f"/v1/renders/{render['id']}"
        done = wait_status(api, render["id"], "awaiting_review")
        assert [s["state"] for s in done["shots"]] == ["done", "done"]
        assert done["output_url"] and done["poster_url"] and done["seconds"] == pytest.approx(4)

        secret = api.get("/v1/webhooks/secret").json()["webhook_secret"]
        assert secret == key.webhook_secret and secret.startswith("whsec_")
        waiting = hook.wait_for("render.awaiting_review")
        assert Webhook(secret).verify(waiting.body, waiting.headers)["data"]["id"] == render["id"]

        published = api.post(f"/v1/renders/{render['id']}/approve")
        assert published.status_code == 200 and published.json()["status"] == "published"
        told = hook.wait_for("render.published")
        assert Webhook(secret).verify(told.body, told.headers)["data"]["status"] == "published"
        assert told.headers["webhook-id"] != waiting.headers["webhook-id"]
        # A forged body does not verify: the receiver's check is real.
        with pytest.raises(Exception, match="signature"):
            Webhook(secret).verify(told.body.replace(b"published", b"rejected"), told.headers)

        def sent() -> list[dict[str, Any]]:
            answer = api.get("/v1/webhooks/deliveries", params={"render_id": render["id"]})
            return list(answer.json()["data"])

        # The receiver has the body before the worker records the outcome: wait for that.
        wait_until(lambda: all(d["state"] == "delivered" for d in sent()), what="the record")
        assert {d["type"] for d in sent()} == {"render.awaiting_review", "render.published"}
        assert all(d["attempts"] == 1 for d in sent())
        assert api.post(f"/v1/renders/{render['id']}/approve").status_code == 409


def test_same_brief_again_is_the_finished_render_at_no_cost(tmp_path: Path) -> None:
    settings = service_settings(tmp_path / "h")
    with running(settings) as server:
        api = server.client(server.new_key().key)
        body = {"brief": BRIEF, "seconds": 4, "size": "640x360"}
        first = api.post("/v1/renders", json=body).json()
        wait_status(api, first["id"], "awaiting_review")
        submits = len(read_journal(settings.journal_path))
        again = api.post("/v1/renders", json=body)
        assert again.status_code == 200 and again.json()["id"] == first["id"]
        assert len(read_journal(settings.journal_path)) == submits == 2


def test_idempotency_key_replays_refuses_other_bodies_and_forgets_failures(tmp_path: Path) -> None:
    with running(service_settings(tmp_path / "h"), with_worker=False) as server:
        api = server.client(server.new_key().key)
        body = {"brief": BRIEF, "seconds": 4}
        first = api.post("/v1/renders", json=body, headers={"Idempotency-Key": "k-1"})
        # Same key, same body (keys in another order): the first answer, replayed.
        replay = api.post("/v1/renders", content=json.dumps({"seconds": 4, "brief": BRIEF}),
                          headers={"Idempotency-Key": "k-1", "Content-Type": "application/json"})
        assert first.status_code == replay.status_code == 202
        assert replay.json() == first.json() and replay.headers["idempotent-replayed"] == "true"
        other = api.post("/v1/renders", json={**body, "seconds": 5},
                         headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_mismatch"
        # A request that failed changed nothing and was not saved: the key can be used again.
        bad = api.post("/v1/renders", json={**body, "model": "nope/nothing"},
                       headers={"Idempotency-Key": "k-2"})
        assert bad.status_code == 422
        good = api.post("/v1/renders", json=body | {"seconds": 6},
                        headers={"Idempotency-Key": "k-2"})
        assert good.status_code == 202
        assert len(api.get("/v1/renders").json()["data"]) == 2


def test_concurrent_posts_with_one_key_make_one_render(tmp_path: Path) -> None:
    with running(service_settings(tmp_path / "h"), with_worker=False) as server:
        key = server.new_key().key

        def post(_: int) -> httpx.Response:
            with server.client(key) as api:
                return api.post("/v1/renders", json={"brief": BRIEF, "seconds": 4},
                                headers={"Idempotency-Key": "same"})

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(post, range(20)))
        assert {a.status_code for a in answers} <= {202, 409}
        ids = {a.json()["id"] for a in answers if a.status_code == 202}
        assert len(ids) == 1
        assert all(a.headers.get("retry-after") for a in answers if a.status_code == 409)
        assert len(server.client(key).get("/v1/renders").json()["data"]) == 1


def test_tenants_see_only_their_own(tmp_path: Path) -> None:
    with running(service_settings(tmp_path / "h")) as server:
        a_key, b_key = server.new_key("a"), server.new_key("b")
        a, b = server.client(a_key.key), server.client(b_key.key)
        render = a.post("/v1/renders", json={"brief": BRIEF, "seconds": 4,
                                             "size": "640x360"}).json()
        done = wait_status(a, render["id"], "awaiting_review")
        rid = render["id"]
        for method, path in [("GET", f"/v1/renders/{rid}"), ("GET", f"/v1/renders/{rid}/events"),
                             ("POST", f"/v1/renders/{rid}/approve"),
                             ("POST", f"/v1/renders/{rid}/cancel"),
                             ("GET", done["output_url"]), ("GET", done["poster_url"])]:
            answer = b.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
        assert b.post(f"/v1/renders/{rid}/reroll", json={"shots": [1]}).status_code == 404
        assert b.get("/v1/renders").json()["data"] == []
        assert b.get("/v1/ledger").json()["data"] == []
        assert len(a.get("/v1/ledger").json()["data"]) == 2
        assert a.get(f"/v1/renders/{rid}").status_code == 200
        # No key, a wrong key, a revoked key: 401, and nothing is said about the render.
        assert server.client(None).get(f"/v1/renders/{rid}").status_code == 401
        assert server.client("sl_live_wrong").get(f"/v1/renders/{rid}").status_code == 401
        db, _ = open_store(server.settings)
        tenants.revoke_key(db, b_key.key_id)
        db.close()
        assert b.get("/v1/renders").status_code == 401


def test_media_supports_range_requests_and_unguessable_keys(stack: Callable[..., Any]) -> None:
    with stack() as server:
        api = server.client(server.new_key().key)
        rid = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 4,
                                            "size": "640x360"}).json()["id"]
        url = wait_status(api, rid, "awaiting_review")["output_url"]
        whole = api.get(url)
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert whole.headers["accept-ranges"] == "bytes"
        # A token's file never changes: caches may keep it, and revalidating costs no body.
        assert whole.headers["cache-control"] == "private, max-age=31536000, immutable"
        same = api.get(url, headers={"If-None-Match": whole.headers["etag"]})
        assert same.status_code == 304 and same.content == b""
        assert api.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
        part = api.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
        tail = api.get(url, headers={"Range": "bytes=-10"})
        assert tail.content == whole.content[-10:]
        beyond = api.get(url, headers={"Range": f"bytes={len(whole.content) + 5}-"})
        assert beyond.status_code == 416
        for probe in ["m_" + "A" * 43, "..%2f..%2fshotline.db", "m_..", "%2e%2e%2fetc%2fpasswd"]:
            assert api.get(f"/v1/media/{probe}").status_code == 404
        # A browser's <video> sends the key as a cookie, not a header.
        cookie_client = server.client(None, cookies={"shotline_key": api.headers["authorization"][7:]})
        assert cookie_client.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
        assert cookie_client.post(f"/v1/renders/{rid}/approve").status_code == 401


def test_render_view_has_an_etag_and_quality_flags(tmp_path: Path) -> None:
    with running(service_settings(tmp_path / "h")) as server:
        api = server.client(server.new_key().key)
        rid = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 4, "audio": True,
                                            "size": "640x360"}).json()["id"]
        view = wait_status(api, rid, "awaiting_review")
        assert view["quality"] == [] and [s["quality"] for s in view["shots"]] == [[], []]
        first = api.get(f"/v1/renders/{rid}")
        tag = first.headers["etag"]
        assert first.headers["cache-control"] == "private, no-cache"
        unchanged = api.get(f"/v1/renders/{rid}", headers={"If-None-Match": tag})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["etag"] == tag
        api.post(f"/v1/renders/{rid}/approve")
        changed = api.get(f"/v1/renders/{rid}", headers={"If-None-Match": tag})
        assert changed.status_code == 200 and changed.json()["status"] == "published"
        assert changed.headers["etag"] != tag
        other = server.client(server.new_key("other").key)
        assert other.get(f"/v1/renders/{rid}", headers={"If-None-Match": tag}).status_code == 404


def test_events_stream_every_step_and_resume(stack: Callable[..., Any]) -> None:
    with stack() as server:
        api = server.client(server.new_key().key)
        rid = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 4,
                                            "size": "640x360"}).json()["id"]
        events = []
        with api.stream("GET", f"/v1/renders/{rid}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event: dict[str, str] = {}
            for line in stream.iter_lines():
                if not line:
                    if event:
                        events.append(event)
                    event = {}
                    continue
                name, _, value = line.partition(": ")
                event[name] = value
        statuses = [json.loads(e["data"])["status"] for e in events if e.get("event") == "status"]
        assert statuses == ["queued", "rendering", "stitching", "awaiting_review"]
        shots = [json.loads(e["data"]) for e in events if e.get("event") == "shot"]
        assert {s["index"] for s in shots} == {1, 2}
        assert any(s["state"] == "rendering" and s["progress"] is not None for s in shots)
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids)
        later = api.get(f"/v1/renders/{rid}/events", headers={"Last-Event-ID": str(ids[-2])})
        assert later.text.count("id: ") == 1 and f"id: {ids[-1]}" in later.text


def test_reroll_bills_only_the_rerolled_shot(stack: Callable[..., Any]) -> None:
    with stack() as server:
        settings = server.settings
        api = server.client(server.new_key().key)
        rid = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 8, "model": "local/sim",
                                            "size": "640x360"}).json()["id"]
        first = wait_status(api, rid, "awaiting_review")
        assert first["cost_usd"] == "0.8" and len(api.get("/v1/ledger").json()["data"]) == 2
        assert api.post(f"/v1/renders/{rid}/reroll", json={"shots": [3]}).status_code == 422
        reroll = {"shots": [2], "prompts": {"2": "The kite lands in a tall oak."}}
        again = api.post(f"/v1/renders/{rid}/reroll", json=reroll,
                         headers={"Idempotency-Key": "rr-1"})
        assert again.status_code == 202 and again.json()["status"] == "rendering"
        assert api.post(f"/v1/renders/{rid}/reroll", json={"shots": [1]}).status_code == 409
        second = wait_status(api, rid, "awaiting_review")
        rows = api.get("/v1/ledger").json()["data"]
        assert len(rows) == 3 and rows[-1]["amount"] == "0.4"
        assert second["cost_usd"] == "1.2"
        assert second["shots"][1]["take"] == 2 and second["shots"][0]["take"] == 1
        assert second["shots"][1]["prompt"] == "The kite lands in a tall oak."
        assert second["output_url"] != first["output_url"]
        # A retried re-roll (the answer was lost, say) replays: no third take is made.
        retried = api.post(f"/v1/renders/{rid}/reroll", json=reroll,
                           headers={"Idempotency-Key": "rr-1"})
        assert retried.headers["idempotent-replayed"] == "true" and retried.json() == again.json()
        assert api.get(f"/v1/renders/{rid}").json()["status"] == "awaiting_review"
        journal = read_journal(settings.journal_path)
        assert sorted(j["index"] for j in journal) == [0, 1, 1]
        assert api.get(first["output_url"]).status_code == 200  # the earlier cut stays viewable
        # The operator's metrics count the same calls, money and cache hit.
        metrics = server.client(None).get("/metrics").text
        assert 'shotline_provider_calls_total{outcome="succeeded",provider="local"} 3.0' in metrics
        assert 'shotline_spend_usd_total{provider="local"} 1.2' in metrics
        assert "shotline_cache_hits_total 1.0" in metrics
        assert "shotline_cache_saved_usd_total 0.4" in metrics


def test_reject_needs_a_reason_and_is_final(tmp_path: Path) -> None:
    with running(service_settings(tmp_path / "h")) as server, receiver() as hook:
        api = server.client(server.new_key().key)
        rid = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 4, "size": "640x360",
                                            "webhook_url": hook.url}).json()["id"]
        wait_status(api, rid, "awaiting_review")
        assert api.post(f"/v1/renders/{rid}/reject", json={}).status_code == 422
        rejected = api.post(f"/v1/renders/{rid}/reject", json={"reason": "kite is off-brand"})
        assert rejected.json()["status"] == "rejected"
        assert rejected.json()["review_note"] == "kite is off-brand"
        assert hook.wait_for("render.rejected").json["data"]["review_note"] == "kite is off-brand"
        conflict = api.post(f"/v1/renders/{rid}/approve")
        assert conflict.status_code == 409 and "rejected" in conflict.json()["error"]["message"]


def test_cancel_stops_the_render_and_its_vendor_jobs(stack: Callable[..., Any]) -> None:
    with stack(local_latency=30) as server, receiver() as hook:
        settings = server.settings
        api = server.client(server.new_key().key)
        rid = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 8, "model": "local/sim",
                                            "webhook_url": hook.url}).json()["id"]
        deadline = 200
        while len(read_journal(settings.journal_path)) < 2 and deadline:
            deadline -= 1
            wait_status(api, rid, "rendering")
        cancelled = api.post(f"/v1/renders/{rid}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert hook.wait_for("render.cancelled").json["data"]["id"] == rid
        db, _ = open_store(settings)
        with db.read() as conn:
            assert conn.execute(sa.select(reservations.c.state)).scalar_one() == "settled"
            states = conn.execute(sa.select(calls.c.state, calls.c.error, calls.c.job)).all()
        db.close()
        assert states and all(s.state == "failed" and "cancelled" in s.error for s in states)
        # The vendor's jobs were stopped too, not merely forgotten.
        jobs = [s.job["job_id"] for s in states]
        assert all(json.loads((settings.local_root / "jobs" / f"{j}.json").read_text())
                   ["cancelled_at"] for j in jobs)
        assert api.get(f"/v1/renders/{rid}").json()["status"] == "cancelled"
        assert api.post(f"/v1/renders/{rid}/cancel").status_code == 409


def test_oversized_bodies_get_413(tmp_path: Path) -> None:
    with running(service_settings(tmp_path / "h", max_body_bytes=5000), with_worker=False) as server:
        api = server.client(server.new_key().key)
        big = json.dumps({"brief": "A kite. " * 2000}).encode()
        declared = api.post("/v1/renders", content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "body_too_large"
        assert "5000 bytes" in declared.json()["error"]["message"]

        def chunks() -> object:
            for i in range(0, len(big), 1000):
                yield big[i:i + 1000]

        streamed = api.post("/v1/renders", content=chunks(),  # type: ignore[arg-type]
                            headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        assert api.get("/v1/renders").json()["data"] == []


def test_bad_input_and_budgets_are_clear_errors_that_change_nothing(tmp_path: Path) -> None:
    settings = service_settings(tmp_path / "h")
    with running(settings, with_worker=False) as server:
        key = server.new_key()
        api = server.client(key.key)
        cases = [({"seconds": 4}, "invalid_request", "brief"),
                 ({"brief": BRIEF, "seconds": -1}, "invalid_request", "seconds"),
                 ({"brief": BRIEF, "fps": "fast"}, "invalid_request", "fps"),
                 ({"brief": BRIEF, "colour": "red"}, "invalid_request", "colour"),
                 ({"brief": BRIEF, "model": "nope/nothing"}, "capability", "nope/nothing"),
                 ({"brief": BRIEF, "webhook_url": "ftp://example.com/x"}, "unsafe_url", "http"),
                 ({"brief": BRIEF, "seconds": 8, "model": "local/sim", "max_usd": 0.5},
                  "budget", "per-render cap"),
                 ({"brief": "A gull dives. (12 s)"}, "brief", 'reads "(12 s)" as 12 s'),
                 ({"brief": "Shot 1: A gull.\nFirst frame: /etc/passwd.png\n"}, "image",
                  "never from its own disk"),
                 ({"brief": "Shot 1: A gull.\nFirst frame: http://169.254.169.254/a.png\n"},
                  "unsafe_url", "image URL http://169.254.169.254/a.png resolves to")]
        for body, code, words in cases:
            answer = api.post("/v1/renders", json=body)
            assert answer.status_code in (402, 422), (body, answer.text)
            assert answer.json()["error"]["code"] == code, (body, answer.text)
            assert words in answer.json()["error"]["message"], (body, answer.text)
        db, _ = open_store(settings)
        tenants.set_budget(db, key.tenant, daily=None, monthly=None)
        tenants.set_budget(db, key.tenant, daily=None, monthly=__import__("decimal").Decimal("0.5"))
        refused = api.post("/v1/renders", json={"brief": BRIEF, "seconds": 8, "model": "local/sim"})
        assert refused.status_code == 402 and "monthly tenant budget" in refused.text
        with db.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(renders)).scalar_one() == 0
            assert conn.execute(sa.select(sa.func.count()).select_from(reservations)).scalar_one() == 0
        db.close()
        assert api.get("/v1/renders/r_nothere").status_code == 404
        confirmed = api.post("/v1/renders", json={"brief": "A gull dives. (12 s)", "yes": True})
        assert confirmed.status_code == 202 and confirmed.json()["shots"][0]["seconds"] == 12


def test_listing_health_metrics_and_openapi(tmp_path: Path) -> None:
    with running(service_settings(tmp_path / "h"), with_worker=False) as server:
        api = server.client(server.new_key().key)
        ids = [api.post("/v1/renders", json={"brief": BRIEF, "seconds": s}).json()["id"]
               for s in (4, 5, 6)]
        page = api.get("/v1/renders", params={"limit": 2}).json()
        assert [r["id"] for r in page["data"]] == ids[:0:-1] and page["next_cursor"] == ids[1]
        rest = api.get("/v1/renders", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert [r["id"] for r in rest["data"]] == [ids[0]] and rest["next_cursor"] is None
        anyone = server.client(None)
        assert anyone.get("/healthz").json()["database"] == "ok"
        metrics = anyone.get("/metrics").text
        assert 'shotline_renders{state="queued"} 3.0' in metrics
        assert "shotline_provider_calls_total" in metrics and "shotline_cache_hits_total" in metrics
        paths = anyone.get("/openapi.json").json()["paths"]
        assert {"/v1/renders", "/v1/renders/{render_id}/reroll", "/v1/media/{token}"} <= set(paths)


def test_two_renders_in_one_worker_share_a_shot_and_pay_once(stack: Callable[..., Any]) -> None:
    # One worker process runs both renders at once; their second shots are the same call.
    with stack(local_latency=1.0, worker_renders=2) as server:
        settings = server.settings
        api = server.client(server.new_key().key)
        ids = [api.post("/v1/renders", json={
            "brief": f"Shot 1: A {colour} kite climbs.\n\nShot 2: The string snaps.",
            "seconds": 8, "model": "local/sim", "size": "640x360"}).json()["id"]
            for colour in ("red", "blue")]
        views = [wait_status(api, rid, "awaiting_review", "failed") for rid in ids]
        assert [v["status"] for v in views] == ["awaiting_review"] * 2, views
        assert len(read_journal(settings.journal_path)) == 3
        assert len(api.get("/v1/ledger").json()["data"]) == 3


def test_an_edited_override_applies_to_the_next_request(tmp_path: Path) -> None:
    settings = service_settings(tmp_path / "h")
    with running(settings, with_worker=False) as server:
        api = server.client(server.new_key().key)
        body = {"brief": BRIEF, "seconds": 8, "model": "local/sim"}
        assert api.post("/v1/renders", json=body).json()["estimate_usd"] == "0.8"
        settings.overrides_path.write_text(
            '[models."local/sim"]\nreason = "test"\nexpires = 2099-01-01\nprices = { "*" = 0.25 }\n')
        assert api.post("/v1/renders", json=body | {"seed": 1}).json()["estimate_usd"] == "2"
