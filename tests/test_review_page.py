"""The review page in a real headless Chromium, against the real server, worker and media.

Debian's Chromium is used as it is installed (scripts/test.sh installs it when missing);
Playwright never downloads a browser here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright

from .service import BRIEF, running, service_settings, wait_status

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# What lets Chromium run headless as root in a container without a GPU or a big /dev/shm.
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking"]
RENDER = {"brief": BRIEF, "seconds": 4, "size": "640x360"}
NEW_PROMPT = "The kite drifts down and lands in a slow brown river."


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
                    "(scripts/test.sh installs it; or `apt-get install -y chromium`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """What the page asked for and said, to check the key never leaks into either."""

    urls: list[str] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    def clean_of(self, key: str) -> None:
        assert not [u for u in self.urls if key in u]
        assert not [m for m in self.console if key in m]
        assert not [m for m in self.console if "Content Security Policy" in m], self.console
        assert not self.crashes, self.crashes


def open_page(browser: Browser, url: str) -> tuple[Page, Watched]:
    page = browser.new_context().new_page()
    page.set_default_timeout(15_000)
    seen = Watched()

    def request(r: Request) -> None:
        seen.urls.append(r.url)
        if r.method == "POST":
            seen.posts.append(r.url)

    def console(m: ConsoleMessage) -> None:
        seen.console.append(m.text)

    page.on("request", request)
    page.on("console", console)
    page.on("pageerror", lambda exc: seen.crashes.append(str(exc)))
    page.goto(url)
    return page, seen


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def media_loaded(page: Page) -> dict[str, Any]:
    """Wait until the video has metadata and both stills have decoded; what the video says."""
    page.wait_for_function("""() => {
        const v = document.querySelector('[data-testid=video]');
        const imgs = ['poster', 'contact-sheet'].map(t => document.querySelector(`[data-testid=${t}]`));
        return v.readyState >= 1 && v.duration > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
    }""", timeout=20_000)
    result: dict[str, Any] = page.get_by_test_id("video").evaluate(
        "v => ({duration: v.duration, src: v.getAttribute('src'), width: v.videoWidth})")
    return result


@pytest.mark.timeout(120)
def test_review_reroll_and_approve_in_the_browser(tmp_path: Path, browser: Browser) -> None:
    with running(service_settings(tmp_path / "h")) as server:
        key = server.new_key().key
        api = server.client(key)
        render_id = api.post("/v1/renders", json=RENDER).json()["id"]
        page, seen = open_page(browser, f"{server.url}/review")
        status = page.get_by_test_id("render-status")

        sign_in(page, key)
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        assert page.evaluate("() => sessionStorage.getItem('shotline_key')") == key
        cookie = {c["name"]: c for c in page.context.cookies()}["shotline_key"]
        assert (cookie["value"], cookie["path"], cookie["sameSite"]) == (key, "/v1/media", "Strict")
        page.locator(f"[data-render-id='{render_id}']").click()
        expect(page.get_by_test_id("render-id")).to_have_text(render_id)
        expect(status).to_have_text("awaiting_review", timeout=45_000)
        assert page.url.endswith(f"/review#{render_id}")

        # The <video> fetched the file itself (cookie, Range requests) and knows its length.
        first = media_loaded(page)
        assert first["duration"] == pytest.approx(4, abs=0.25) and first["width"] == 640
        expect(page.get_by_test_id("approve")).to_be_enabled()
        expect(page.get_by_test_id("cancel")).to_be_disabled()

        # Reject without a reason is refused in the page: nothing is sent, nothing changes.
        page.get_by_role("button", name="Reject").click()
        expect(page.get_by_role("alert")).to_contain_text("needs a reason")
        expect(page.get_by_label("Reason for rejecting (required)")).to_be_focused()
        assert not [u for u in seen.posts if u.endswith("/reject")]
        assert api.get(f"/v1/renders/{render_id}").json()["status"] == "awaiting_review"

        page.get_by_label("New prompt for shot 2 (optional)").fill(NEW_PROMPT)
        expect(page.get_by_label("Re-roll shot 2")).to_be_checked()  # typing a prompt ticks it
        expect(page.get_by_label("Re-roll shot 1")).not_to_be_checked()
        page.get_by_role("button", name="Re-roll selected shots").click()
        expect(status).to_have_text(re.compile("^(queued|rendering|stitching)$"))
        expect(page.get_by_test_id("approve")).to_be_disabled()
        expect(status).to_have_text("awaiting_review", timeout=45_000)
        expect(page.get_by_test_id("shot-take-2")).to_have_text("2")
        expect(page.get_by_test_id("shot-prompt-text-2")).to_have_text(NEW_PROMPT)
        view = api.get(f"/v1/renders/{render_id}").json()
        assert [(s["take"], s["prompt"] == NEW_PROMPT) for s in view["shots"]] == [(1, False), (2, True)]
        second = media_loaded(page)
        assert second["src"] == view["output_url"] != first["src"]  # the restitched video

        page.get_by_role("button", name="Approve").click()
        expect(status).to_have_text("published")
        expect(page.locator(f"[data-render-id='{render_id}'] .badge")).to_have_text("published")
        for action in ("approve", "reject", "reroll", "cancel"):
            expect(page.get_by_test_id(action)).to_be_disabled()
        assert api.get(f"/v1/renders/{render_id}").json()["status"] == "published"
        expect(page.get_by_role("alert")).to_be_hidden()

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("API key")).to_be_visible()
        assert page.evaluate("() => sessionStorage.getItem('shotline_key')") is None
        assert "shotline_key" not in {c["name"] for c in page.context.cookies()}
        seen.clean_of(key)
        page.context.close()


@pytest.mark.timeout(90)
def test_wrong_key_shows_the_error_then_the_right_one_opens_the_linked_render(
        tmp_path: Path, browser: Browser) -> None:
    with running(service_settings(tmp_path / "h"), with_worker=False) as server:
        key = server.new_key().key
        api = server.client(key)
        render_id = api.post("/v1/renders", json=RENDER).json()["id"]
        page, seen = open_page(browser, f"{server.url}/review#{render_id}")
        wrong = "sl_live_" + "x" * 30

        sign_in(page, wrong)
        expect(page.get_by_role("alert")).to_contain_text("a valid API key is needed")
        expect(page.get_by_role("alert")).to_contain_text("(unauthorized)")
        expect(page.get_by_test_id("render-item")).to_have_count(0)
        expect(page.get_by_test_id("render-detail")).to_be_hidden()
        assert page.evaluate("() => sessionStorage.getItem('shotline_key')") is None
        assert page.context.cookies() == []

        # A link to a render opens it once signed in; a queued render can only be cancelled.
        sign_in(page, key)
        expect(page.get_by_role("alert")).to_be_hidden()
        expect(page.get_by_test_id("render-id")).to_have_text(render_id)
        expect(page.get_by_test_id("render-status")).to_have_text("queued")
        for action in ("approve", "reject", "reroll"):
            expect(page.get_by_test_id(action)).to_be_disabled()
        page.get_by_role("button", name="Cancel render").click()
        expect(page.get_by_test_id("render-status")).to_have_text("cancelled")
        assert wait_status(api, render_id, "cancelled", timeout=5)["status"] == "cancelled"

        # A reload keeps the tab signed in (sessionStorage), straight back on the render.
        page.reload()
        expect(page.get_by_test_id("render-status")).to_have_text("cancelled")
        seen.clean_of(key)
        seen.clean_of(wrong)
        page.context.close()


@pytest.mark.timeout(90)
def test_the_page_shows_what_the_quality_gate_found(tmp_path: Path, browser: Browser) -> None:
    # Sound was asked for, but the "vendor" sends shot 2 without any.
    settings = service_settings(tmp_path / "h", local_faults="shot2:noaudio")
    with running(settings) as server:
        key = server.new_key().key
        api = server.client(key)
        render_id = api.post("/v1/renders", json={**RENDER, "audio": True}).json()["id"]
        wait_status(api, render_id, "awaiting_review")
        page, seen = open_page(browser, f"{server.url}/review#{render_id}")
        sign_in(page, key)
        expect(page.get_by_test_id("render-status")).to_have_text("awaiting_review")
        flags = page.get_by_test_id("quality-flag")
        expect(flags).to_have_count(1)
        expect(flags).to_contain_text("fail · silent")
        expect(flags).to_contain_text("shot 2: the clip has no sound")
        expect(page.get_by_test_id("shot-checks-2")).to_have_text("fail silent")
        expect(page.get_by_test_id("shot-checks-1")).to_have_text("ok")
        seen.clean_of(key)
        page.context.close()


THREE = ("Shot 1: A red kite climbs over a green hill.\n\nShot 2: The kite string snaps.\n\n"
         "Shot 3: The kite tumbles into the sea.")


@pytest.mark.timeout(150)
def test_pick_take_2_of_shot_3_and_approve(tmp_path: Path, browser: Browser) -> None:
    from .test_takes import corner, near

    with running(service_settings(tmp_path / "h")) as server:
        key = server.new_key().key
        api = server.client(key)
        render_id = api.post("/v1/renders", json={
            "brief": THREE, "seconds": 12, "size": "640x360", "model": "local/sim",
            "takes": 3}).json()["id"]
        page, seen = open_page(browser, f"{server.url}/review#{render_id}")
        status = page.get_by_test_id("render-status")
        sign_in(page, key)
        expect(status).to_have_text("awaiting_review", timeout=60_000)
        expect(page.get_by_test_id("estimate")).to_have_text("$3.60")  # 3 shots x 3 takes x $0.40
        for n in (1, 2, 3):  # every take side by side, the first in the video
            expect(page.get_by_test_id(f"shot-players-{n}").locator("video")).to_have_count(3)
            expect(page.get_by_test_id(f"pick-{n}-1")).to_be_disabled()
        page.wait_for_function("""() => [1, 2, 3].every(t => {
            const v = document.querySelector(`[data-testid=take-video-3-${t}]`);
            return v && v.readyState >= 1 && v.duration > 0; })""", timeout=20_000)
        first = media_loaded(page)

        page.get_by_role("button", name="Pick take 2 of shot 3").click()
        expect(status).to_have_text("awaiting_review", timeout=45_000)
        expect(page.get_by_test_id("pick-3-2")).to_have_text("In the video")
        expect(page.get_by_test_id("take-3-2")).to_have_class(re.compile("picked"))
        expect(page.get_by_test_id("pick-3-1")).to_be_enabled()
        second = media_loaded(page)
        assert second["src"] != first["src"]
        page.get_by_role("button", name="Approve").click()
        expect(status).to_have_text("published")
        expect(page.get_by_test_id("pick-3-1")).to_be_disabled()
        seen.clean_of(key)
        page.context.close()

        view = api.get(f"/v1/renders/{render_id}").json()
        assert view["status"] == "published" and [s["take"] for s in view["shots"]] == [1, 1, 2]
        takes = view["shots"][2]["takes"]
        assert [(t["take"], t["picked"]) for t in takes] == [(1, False), (2, True), (3, False)]
        files = {}
        for name, url in [("output", view["output_url"])] + [(t["take"], t["url"]) for t in takes]:
            files[name] = tmp_path / f"{name}.mp4"
            files[name].write_bytes(api.get(url).content)
        # Shot 3 fills 8-12 s of the published video: it holds take 2.
        assert near(corner(files["output"], 10.0), corner(files[2], 2.0))
        assert not near(corner(files["output"], 10.0), corner(files[1], 2.0))
        rows = api.get("/v1/ledger", params={"render_id": render_id}).json()["data"]
        assert {t["key"] for t in takes} <= {r["shot_key"] for r in rows}
        assert len(rows) == 9 and view["cost_usd"] == "3.6"
