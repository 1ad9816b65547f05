"""What every HTTP vendor adapter shares: keys, base URLs, error classes, downloads.

An adapter subclasses :class:`HttpProvider`, names its vendor's key variable and default
base URL, and maps a shot to the vendor's request. This module decides, once for all of
them, what an HTTP outcome means:

* 429 (with Retry-After) and 5xx are ``RetryableError``; so is a connection that could
  not be opened, because then nothing was sent.
* A timeout or dropped connection *after* a submit was sent is ``AmbiguousSubmitError``:
  the vendor may have the job, so it must be reconciled, never resubmitted blindly.
* 400/404/409/422 are ``PermanentError`` carrying the vendor's message; 401/403 are
  authentication and 402 quota or billing errors, also permanent.
* Vendor file URLs expire; a 403/404/410 on a download says so instead of retrying.

Secrets never leave this module: the key goes only into request headers for the vendor's
own host, and every message built from a vendor's body is scrubbed of it (in every form,
before it is cut short: see :mod:`.scrub`). Redirects are
followed by hand, never by httpx: an API call follows only a redirect within the same
origin (scheme, host and port) and refuses any other, so neither the prompt nor the key is
re-sent to a host the user did not configure; a file download may be sent on to another
host (vendors hand files to their CDNs), but then with none of our headers.
"""

from __future__ import annotations

import binascii
import email.utils
import json
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from math import gcd
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from ..core.capabilities import Capabilities, parse_size, table_for
from ..core.cast import refusal
from ..errors import (
    AmbiguousSubmitError,
    CapabilityError,
    ConfigError,
    PermanentError,
    RetryableError,
)
from ..settings import Settings
from .base import BaseProvider, JobRef, ShotRequest
from .scrub import scrub

MAX_REDIRECTS = 5
# Seconds a vendor's creation time may read earlier than our clock at submit and still be
# taken for that submit by a lookup (clock skew). A job older than this is another take's.
CLOCK_SLACK = 120.0
MODERATION_WORDS = ("moderation", "content policy", "safety", "nsfw", "flagged", "sensitive")
RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21")


def _ratio_value(ratio: str) -> float:
    w, h = ratio.split(":")
    return int(w) / int(h)


def aspect_ratio(size: str, ratios: tuple[str, ...] = RATIOS, tolerance: float | None = None
                 ) -> str:
    """The vendor's named ratio for ``size``: exact if it reduces to one, else the nearest.

    With ``tolerance``, a nearest ratio further off than that fraction is refused.
    """
    w, h = parse_size(size)
    exact = f"{w // gcd(w, h)}:{h // gcd(w, h)}"
    if exact in ratios:
        return exact
    best = min(ratios, key=lambda r: abs(_ratio_value(r) - w / h))
    if tolerance is not None and abs(_ratio_value(best) / (w / h) - 1) > tolerance:
        raise CapabilityError(f"size {size} has no matching aspect ratio ({', '.join(ratios)})")
    return best


def parse_time(value: Any) -> float | None:
    """Unix seconds from a vendor's ISO 8601 time or number, or None if it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def check(request: ShotRequest, caps: Capabilities, *, images: bool = False) -> None:
    """Refuse what the model cannot do, before a call that the vendor might bill.

    The planner checks durations, sizes and audio already; this is the adapter's own
    guard, for requests built by other callers. ``images``: the adapter can send the
    image inputs the table lists for the model.
    """
    problems = []
    if request.seconds not in caps.durations:
        problems.append(f"{request.seconds} s (allowed: {', '.join(map(str, caps.durations))})")
    if request.size not in caps.sizes:
        problems.append(f"size {request.size} (allowed: {', '.join(caps.sizes)})")
    if request.audio and caps.audio == "none":
        problems.append("audio (this model makes silent video)")
    wanted = {"first_frame": request.first_frame, "last_frame": request.last_frame}
    for kind in (k for k, path in wanted.items() if path is not None):
        if not images or kind not in caps.image_inputs:
            problems.append(f"a {kind.replace('_', ' ')} (not supported by this adapter and model)")
    if request.references:
        why = refusal(caps, request.seconds, request.first_frame is not None,
                      request.last_frame is not None) if images else "this adapter sends none"
        if why is None and len(request.references) > caps.max_references:
            why = f"at most {caps.max_references} a call"
        if why is not None:
            problems.append(f"{len(request.references)} reference image(s) ({why})")
    if problems:
        raise CapabilityError(f"{caps.model} cannot do: {'; '.join(problems)}; nothing was sent")


def add_seed(body: dict[str, Any], caps: Capabilities, request: ShotRequest) -> dict[str, Any]:
    """Put the user's seed in ``body``, for models that take one (others refuse the field)."""
    if caps.seed and request.seed is not None:
        body["seed"] = int(request.seed)
    return body


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date)."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def vendor_message(resp: httpx.Response, clean: Callable[[str], str] = str,
                   limit: int = 500) -> str:
    """The vendor's own words from an error body, whatever shape its JSON takes, passed
    through ``clean`` (the scrubber) whole, and only then cut to ``limit`` characters."""
    try:
        body: Any = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return clean(resp.text.strip())[:limit] or resp.reason_phrase
    for _ in range(3):  # unwrap {"error": {"message": ...}} and similar nestings
        if isinstance(body, dict):
            for field in ("message", "detail", "error", "failure", "msg", "title"):
                if body.get(field):
                    body = body[field]
                    break
            else:
                break
        elif isinstance(body, list) and body:
            body = body[0]
        else:
            break
    return clean(body if isinstance(body, str) else json.dumps(body))[:limit]


def verify_signed(vendor: str, body: bytes, headers: Mapping[str, str], secret: str) -> Any:
    """The payload of a Standard Webhooks delivery whose signature checks out.

    ``body`` must be the raw bytes as received. A bad, missing or stale (over 5 minutes)
    signature raises PermanentError; a secret that is not ``whsec_`` base64, ConfigError.
    """
    try:
        hook = Webhook(secret)
    except (EmptyWebhookSecretError, binascii.Error, ValueError):
        raise ConfigError(f"{vendor}: the webhook secret is not a whsec_ base64 secret") from None
    try:
        return hook.verify(body, dict(headers))
    except (WebhookVerificationError, ValueError) as exc:  # ValueError: malformed header
        raise PermanentError(f"{vendor}: webhook rejected: {exc}",
                             reason="bad webhook signature") from None


class HttpProvider(BaseProvider):
    """Base class of the HTTP adapters; see the module docstring for the error rules."""

    name: ClassVar[str]
    key_env: ClassVar[tuple[str, ...]]
    default_base_url: ClassVar[str]

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self.settings = settings
        if not self.has_credentials():  # now, before a render is opened, not at a submit
            raise ConfigError(f"{self.name}: no API key; set {' or '.join(self.key_env)}")
        env = f"SHOTLINE_{self.name.upper()}_BASE_URL"
        self.base_url = os.environ.get(env, self.default_base_url).rstrip("/")
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.provider_timeout, connect=min(10.0, settings.provider_timeout)),
            transport=transport, follow_redirects=False)  # see _redirect

    # -- credentials ------------------------------------------------------------------

    @classmethod
    def has_credentials(cls) -> bool:
        return any(os.environ.get(var) for var in cls.key_env)

    def api_key(self) -> str:
        for var in self.key_env:
            if value := os.environ.get(var):
                return value
        raise ConfigError(f"{self.name}: no API key; set {' or '.join(self.key_env)}")

    def preflight(self, request: ShotRequest) -> None:
        """What the core checks before it writes anything: a key, and what the model can do."""
        self.api_key()
        self.validate(request)

    def validate(self, request: ShotRequest) -> None:
        """Raise CapabilityError for a request this vendor's model cannot take (no I/O)."""

    def capabilities(self, request: ShotRequest) -> Capabilities:
        return table_for(self.settings.overrides_path).get(request.model)

    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate with the vendor (Bearer by default)."""
        return {"Authorization": f"Bearer {self.api_key()}"}

    def secrets(self) -> list[str]:
        """Every secret this adapter may send, to be scrubbed from what vendors send back."""
        return [value for var in self.key_env if (value := os.environ.get(var))]

    def _scrub(self, text: str) -> str:
        return scrub(text, self.secrets())

    # -- requests ---------------------------------------------------------------------

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    def _own_host(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self.base_url).netloc

    def _redirect(self, resp: httpx.Response, method: str, hops: int) -> tuple[str, httpx.URL]:
        """Where a redirect answer sends ``method`` next: (method, absolute URL)."""
        if hops >= MAX_REDIRECTS:
            raise PermanentError(f"{self.name}: more than {MAX_REDIRECTS} redirects from "
                                 f"{resp.request.url.host}", reason="too many redirects")
        target = resp.request.url.join(resp.headers["location"])
        # 303, and 301/302 after a POST, turn into a GET without a body (as browsers do).
        if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
            method = "GET"
        return method, target

    @staticmethod
    def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
        return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)

    async def call(self, method: str, path: str, *, submit: bool = False,
                   body: Any = None, headers: dict[str, str] | None = None,
                   params: dict[str, Any] | None = None) -> Any:
        """One JSON request to the vendor; raises the classified error on failure.

        A redirect is followed only within the request's own origin; one to another origin
        is refused with PermanentError and nothing is sent there.
        """
        url = self.url(path)
        sent_headers = {**(self.auth_headers() if self._own_host(url) else {}), **(headers or {})}
        hops = 0
        while True:
            resp = await self._send(method, url, body, sent_headers, params, submit)
            if not resp.has_redirect_location:
                break
            next_method, target = self._redirect(resp, method, hops)
            if not self._same_origin(resp.request.url, target):
                raise PermanentError(
                    f"{self.name}: {method} {urlsplit(url).path} was redirected ({resp.status_code}) "
                    f"to another origin, {target.scheme}://{target.host}"
                    f"{f':{target.port}' if target.port else ''}; shotline follows redirects "
                    "only within the vendor's own origin, so nothing was sent there (check "
                    f"SHOTLINE_{self.name.upper()}_BASE_URL)", reason="redirect to another origin")
            if next_method != method:
                body = None
            method, url, params, hops = next_method, str(target), None, hops + 1
        self.raise_for(resp)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except json.JSONDecodeError:
            raise RetryableError(f"{self.name}: answer is not JSON", reason="bad JSON") from None

    async def _send(self, method: str, url: str, body: Any, headers: dict[str, str],
                    params: dict[str, Any] | None, submit: bool) -> httpx.Response:
        try:
            return await self.client.request(method, url, json=body, headers=headers,
                                             params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RetryableError(f"{self.name}: cannot connect ({type(exc).__name__})",
                                 reason="connection failed") from None
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            what = f"{self.name}: no answer to {method} {urlsplit(url).path} ({type(exc).__name__})"
            if submit:
                raise AmbiguousSubmitError(what, reason="timeout after the submit was sent") from None
            raise RetryableError(what, reason="timeout") from None

    def raise_for(self, resp: httpx.Response) -> None:
        """Turn a vendor's HTTP error into the right exception, with its own message."""
        if resp.is_success:
            return
        said = vendor_message(resp, self._scrub)
        code = resp.status_code
        where = f"{self.name} answered {code}"
        if code == 429 or code == 408:
            raise RetryableError(f"{where}: {said}", reason=f"rate limited ({code}): {said}",
                                 retry_after=retry_after(resp.headers))
        if code >= 500:
            raise RetryableError(f"{where}: {said}", reason=f"server error ({code}): {said}",
                                 retry_after=retry_after(resp.headers))
        if code in (401, 403):
            raise PermanentError(f"{where}: authentication failed: {said} (check "
                                 f"{' or '.join(self.key_env)})", reason=f"auth: {said}")
        if code == 402:
            raise PermanentError(f"{where}: quota or billing: {said}", reason=f"quota: {said}")
        kind = "moderation" if self.is_moderation(said) else "validation"
        raise PermanentError(f"{where}: {said}", reason=f"{kind}: {said}")

    def is_moderation(self, message: str) -> bool:
        return any(word in message.lower() for word in MODERATION_WORDS)

    # -- files ------------------------------------------------------------------------

    async def fetch(self, url: str, dest: Path, *, headers: dict[str, str] | None = None) -> Path:
        """Stream a vendor file into ``dest``; the key is sent only to the vendor's own host.

        Vendors hand files over to their CDNs, so a redirect to another origin is followed,
        but without any of our headers (no key, no extra ``headers``).
        """
        sent = {**(self.auth_headers() if self._own_host(url) else {}), **(headers or {})}
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = httpx.URL(url)
        try:
            for hops in range(MAX_REDIRECTS + 1):
                resp = await self.client.send(self.client.build_request("GET", target, headers=sent),
                                              stream=True)
                try:
                    if resp.has_redirect_location:
                        _, following = self._redirect(resp, "GET", hops)
                        if not self._same_origin(target, following):
                            sent = {}
                        target = following
                        continue
                    return await self._save(resp, dest)
                finally:
                    await resp.aclose()
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise RetryableError(f"{self.name}: download interrupted ({type(exc).__name__})",
                                 reason="download interrupted") from None
        raise AssertionError("unreachable: _redirect raises past MAX_REDIRECTS")

    async def _save(self, resp: httpx.Response, dest: Path) -> Path:
        if resp.status_code in (403, 404, 410):
            raise PermanentError(
                f"{self.name}: the file URL answered {resp.status_code}: it has expired "
                "or is gone (vendor URLs last hours to days); the job would have to be "
                "rendered again", reason=f"expired URL ({resp.status_code})")
        if not resp.is_success:
            await resp.aread()
            self.raise_for(resp)
        with dest.open("wb") as out:
            async for chunk in resp.aiter_bytes(1 << 16):
                out.write(chunk)
        return dest

    async def cancel(self, ref: JobRef) -> bool:
        return False

    async def aclose(self) -> None:
        await self.client.aclose()
