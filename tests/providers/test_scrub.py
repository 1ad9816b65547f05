"""Keys never leave in what a vendor sends back, in any form it can hold them.

Unit cases for every form (:mod:`shotline.providers.scrub`), a property test over random
keys and texts, the adapters' error path (a key echoed past the 500 characters a message
keeps), and one render through the service: the key echoed by a vendor reaches neither
the API's answer, the webhook, nor the command line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from shotline import cli
from shotline.errors import PermanentError
from shotline.providers.fal import FalProvider
from shotline.providers.scrub import REDACTED, scrub
from shotline.settings import Settings

from ..service import receiver, running, service_settings, wait_status
from .fake_fal import KEY, FalFake
from .vendor_server import Response, VendorServer

SECRET = "a1b2c3d4-e5f6:0123456789abcdef/+XYZ"  # a fal-style id:secret, with / and +


def forms(key: str) -> dict[str, str]:
    """The key as vendors have been seen to send it back."""
    quoted = urllib.parse.quote(key, safe="")
    return {
        "as written": key,
        "percent-encoded": quoted,
        "percent-encoded, lower case": quoted.lower(),
        "form-encoded": urllib.parse.quote_plus(key),
        "percent-encoded twice": urllib.parse.quote(quoted, safe=""),
        "json-escaped": json.dumps(key)[1:-1].replace("/", "\\/"),
        "json, every character escaped": "".join(f"\\u{ord(ch):04x}" for ch in key),
        "basic credentials": base64.b64encode(f"api:{key}".encode()).decode(),
        "basic credentials, user of 2": base64.b64encode(f"ab:{key}".encode()).decode(),
        "basic credentials, user of 4": base64.b64encode(f"abcd:{key}".encode()).decode(),
        "base64url": base64.urlsafe_b64encode(f"user:{key}".encode()).decode(),
        "its first 8 characters": key[:8] + "...",
        "its first 13 characters": key[:13] + "***",
    }


def leaks(text: str, key: str) -> list[str]:
    """The forms of ``key`` (an 8-character prefix of each) still readable in ``text``."""
    return [name for name, form in forms(key).items()
            if form[:8] in text and not name.startswith("its first")] + (
        ["a prefix"] if key[:8] in text else [])


@pytest.mark.parametrize("name", list(forms(SECRET)))
def test_each_form_is_redacted(name: str) -> None:
    form = forms(SECRET)[name]
    text = f'{{"error": "invalid credentials {form} for request 42"}}'
    clean = scrub(text, [SECRET])
    assert REDACTED in clean and not leaks(clean, SECRET), clean
    assert clean.startswith('{"error": "invalid credentials ') and "request 42" in clean


def test_text_before_a_key_that_reads_like_its_start_leaves_none_of_it() -> None:
    # Found by the property test below: the match began on the "00" before the key, and
    # the key's last two characters stayed.
    escaped = "".join(f"\\u{ord(c):04x}" for c in "00000000")
    assert scrub("00" + escaped, ["00000000"]) == REDACTED
    assert scrub("ab" + "abababab" + "!", ["abababab"]) == REDACTED + "!"


def test_a_character_of_the_key_never_matches_inside_an_escape() -> None:
    # Found by the property test below: "U" also matched the "\u" of "\u0055" (a backslash
    # and the letter in the other case), so the match ended inside that escape and
    # "55\u0030\u0030" stayed behind it.
    escaped = "".join(f"\\u{ord(c):04x}" for c in "00000U00")
    assert scrub(escaped, ["00000U00"]) == REDACTED
    # A backslash in the key: its "\u005c" is not taken for "\" and then "u" its next.
    key = "0000\\u00"
    assert scrub("".join(f"\\u{ord(c):04x}" for c in key), [key]) == REDACTED
    # A character of several bytes, percent-encoded: all of them.
    euro = "pay\u20ac-key-0001"
    assert scrub(urllib.parse.quote(euro), [euro]) == REDACTED


def test_what_is_not_a_key_is_left_alone() -> None:
    text = "a1b2c3d moderation: the prompt was flagged; abcdef 0123456"
    assert scrub(text, [SECRET]) == text  # 7 characters of the key are not a prefix of 8
    assert scrub("key abcde here", ["abcde"]) == "key abcde here"  # too short to be a key
    assert scrub("anything", [None, ""]) == "anything"


def test_a_key_near_the_end_of_a_long_body_is_found_before_any_cut() -> None:
    text = "x" * 5000 + urllib.parse.quote(SECRET, safe="")
    assert scrub(text, [SECRET]).endswith(REDACTED)


@given(key=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=60),
       before=st.text(max_size=40), after=st.text(max_size=40),
       form=st.sampled_from(sorted(forms("placeholder-key"))))
def test_any_key_in_any_form_anywhere(key: str, before: str, after: str, form: str) -> None:
    written = forms(key)[form]
    assume(key[:8] not in before + after and written[:8] not in before + after)
    clean = scrub(before + written + after, [key])
    assert REDACTED in clean and key[:8] not in clean and written[:8] not in clean, clean


# --- the adapters: vendor bodies are scrubbed whole, then cut ------------------------------------


def echo(server: VendorServer, status: int, message: str) -> None:
    """Every submit is answered with ``status`` and ``message`` (routes match in order)."""
    server.routes.insert(0, ("POST", __import__("re").compile(r"/.*$"),
                             lambda req, m: Response(status, {"detail": message})))


@pytest.mark.parametrize("name", list(forms(KEY)))
def test_an_error_echoing_the_key_past_500_characters_never_shows_it(
        tmp_path: Path, fal: FalFake, vendor_server: VendorServer, name: str) -> None:
    # The key starts 469 characters in: the 500 a message keeps hold its beginning.
    echo(vendor_server, 422, "bad request: " + "x" * 450 + " auth=" + forms(KEY)[name])
    from .test_fal import request

    async def submit() -> None:
        provider = FalProvider(Settings(home=tmp_path))
        try:
            await provider.submit(request("fal/seedance-2.0", "480x480", 4))
        finally:
            await provider.aclose()

    with pytest.raises(PermanentError) as info:
        asyncio.run(submit())
    assert not leaks(str(info.value), KEY) and not leaks(info.value.reason, KEY)
    assert REDACTED in str(info.value), str(info.value)


# --- one render through the service: API, webhook and CLI --------------------------------------


@pytest.mark.slow
def test_a_key_a_vendor_echoes_reaches_no_answer_webhook_or_cli_line(
        tmp_path: Path, fal: FalFake, vendor_server: VendorServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    said = ("invalid key " + urllib.parse.quote(KEY, safe="") + " (basic " +
            base64.b64encode(f"key:{KEY}".encode()).decode() + ") ")
    # The key written out once more, where the 500 characters a message keeps end: cut
    # first and scrubbed after, its first 12 characters would be left.
    echo(vendor_server, 422, said + "y" * (488 - len(said)) + KEY)
    home = tmp_path / "h"
    monkeypatch.setenv("SHOTLINE_HOME", str(home))
    with receiver() as hook, running(service_settings(home)) as server:
        api = server.client(server.new_key().key)
        made = api.post("/v1/renders", json={"brief": "A red kite rises.", "seconds": 4,
                                             "model": "fal/seedance-2.0", "size": "480x480",
                                             "webhook_url": hook.url})
        assert made.status_code == 202, made.text
        view = wait_status(api, made.json()["id"], "failed")
        failed = hook.wait_for("render.failed")
        with CliRunner().isolation() as (out, err, _):
            assert cli.run(["show", view["id"], "--json"]) == 0
            shown = out.getvalue().decode()
    answers: dict[str, Any] = {"api": json.dumps(view), "webhook": failed.body.decode(),
                               "cli": shown}
    for where, text in answers.items():
        assert "422" in text, (where, text)  # the vendor's refusal is there...
        assert not leaks(text, KEY), (where, leaks(text, KEY))  # ...its echo of the key is not
        assert "redacted" in text, where
