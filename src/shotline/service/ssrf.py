"""A guard for outbound requests to URLs a user gave us: webhooks, and a brief's images.

Invariants:

* Only ``http``/``https`` URLs with a host and no userinfo are called; without
  ``allow_private`` only ports 80 and 443, and never port 0 (no server listens there, and
  a URL spelling ``:0`` is read as port 0, not as the scheme's default).
* A URL is judged by the addresses its host resolves to, never by its spelling, so
  ``2130706433``, ``0x7f.1`` or ``127.1`` count as ``127.0.0.1``. Every resolved address
  must be public; one private answer among public ones refuses the URL.
* :class:`PinnedTransport` resolves once per request and connects to the address it
  approved (Host header and TLS SNI keep the original name), so a name that answers
  differently on a second lookup (DNS rebinding) cannot move the connection elsewhere.
  Redirects are the client's business: it must be built with ``follow_redirects=False``.
* ``allow_private`` lifts the address and port rules, never the scheme, host or userinfo
  rules. It exists for local development and tests.
* A :class:`Purpose` words the refusals for what the URL is for (a webhook, an image) and
  names the setting that lifts the address rules for it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import httpx

from ..errors import UnsafeURLError

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOWED_SCHEMES = ("http", "https")
PUBLIC_PORTS = (80, 443)
RESOLVE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Purpose:
    """What a guarded URL is for, in the words of its refusals."""

    noun: str  # "webhook URL"
    plural: str  # "webhooks"
    setting: str  # the variable that lifts the address and port rules
    example: str  # a URL of the right form

    @property
    def private_hint(self) -> str:
        return f"{self.setting}=1 allows private targets, for local development only"

    @property
    def port_hint(self) -> str:
        return f"{self.setting}=1 allows any port, for local development only"


WEBHOOK = Purpose("webhook URL", "webhooks", "SHOTLINE_ALLOW_PRIVATE_WEBHOOKS",
                  "https://example.com/hook")
IMAGE = Purpose("image URL", "image URLs", "SHOTLINE_ALLOW_PRIVATE_IMAGES",
                "https://example.com/maya.png")

# Packets to these reach the embedded IPv4 host itself, so that host is what gets judged.
_NAT64 = IPv6Network("64:ff9b::/96")
# RFC 8215: each operator picks where the IPv4 sits inside it, so it cannot be decoded.
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = IPv6Network("::/96")
# What inet_aton might accept; anything else is certainly a name.
_LEGACY_V4 = re.compile(r"[0-9a-fA-FxX.]+")


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, and the address a request to it must connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


async def resolve(host: str, port: int) -> list[str]:
    """A and AAAA answers for ``host``, through the system resolver, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(ip: IPAddress) -> bool:
    """True if ``ip`` (and any IPv4 address inside it) is reachable on the public internet."""
    return _why_not_public(ip) is None


def _why_not_public(ip: IPAddress) -> str | None:
    if isinstance(ip, IPv6Address):
        return _why_not_public_v6(ip)
    return _own_reason(ip)


def _why_not_public_v6(ip: IPv6Address) -> str | None:
    translated = ip.ipv4_mapped or (IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
    if translated is not None:
        why = _own_reason(translated)
        return None if why is None else f"an IPv6 form of {translated}, {why}"
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    why = _own_reason(ip)
    if why is not None:
        return why
    for inner in _tunnelled(ip):
        why = _own_reason(inner)
        if why is not None:
            return f"an IPv6 form of {inner}, {why}"
    return None


def _tunnelled(ip: IPv6Address) -> list[IPv4Address]:
    """IPv4 addresses carried inside a 6to4, Teredo or IPv4-compatible address."""
    found = [ip.sixtofour] if ip.sixtofour else []
    if ip.teredo:
        found.extend(ip.teredo)
    if ip in _IPV4_COMPATIBLE:
        found.append(IPv4Address(int(ip)))
    return found


def _own_reason(ip: IPAddress) -> str | None:
    """Why the address itself is not public, in words for an error message."""
    checks = [
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, IPv6Address) and ip.is_site_local, "a site-local address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "a non-public address"),
    ]
    return next((words for failed, words in checks if failed), None)


def _literal(host: str) -> IPAddress | None:
    """The address ``host`` denotes if it is an IP literal in any form a resolver accepts."""
    bare = host.removesuffix(".").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if not _LEGACY_V4.fullmatch(bare):
        return None
    try:
        # Decimal, octal, hex and shortened dotted forms, as getaddrinfo reads them.
        return IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _shown(raw: str, url: httpx.URL | None) -> str:
    """The URL for an error message, without any password it carried."""
    if url is not None and url.userinfo:
        return str(url.copy_with(username=None, password=None)).replace("://", "://***@", 1)
    return raw if len(raw) <= 200 else raw[:200] + "..."


def _parse(url: str | httpx.URL, purpose: Purpose) -> tuple[str, httpx.URL]:
    raw = str(url)
    try:
        return raw, url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeURLError(f"{purpose.noun} {_shown(raw, None)} is not a valid URL ({exc}): "
                             f"give a full URL such as {purpose.example}") from None


def _check_form(raw: str, url: httpx.URL, allow_private: bool,
                purpose: Purpose) -> tuple[str, int]:
    """The host (ASCII) and port, once the URL's form is acceptable."""
    shown = _shown(raw, url)
    if url.scheme not in ALLOWED_SCHEMES:
        raise UnsafeURLError(f"{purpose.noun} {shown} has scheme {url.scheme or '(none)'!r}: "
                             "only http and https are allowed")
    if url.userinfo:
        raise UnsafeURLError(f"{purpose.noun} {shown} carries a user name or password: "
                             f"credentials are not allowed in {purpose.noun}s")
    host = url.raw_host.decode("ascii")
    if not host:
        raise UnsafeURLError(f"{purpose.noun} {shown} has no host: give a full URL such as "
                             f"{purpose.example}")
    # An explicit :0 is port 0, not "no port": only a missing port takes the scheme's.
    port = url.port if url.port is not None else (443 if url.scheme == "https" else 80)
    if port == 0:
        raise UnsafeURLError(f"{purpose.noun} {shown} uses port 0, which no server listens on: "
                             "give the server's port (80 or 443)")
    if not allow_private and port not in PUBLIC_PORTS:
        raise UnsafeURLError(f"{purpose.noun} {shown} uses port {port}: only ports 80 and 443 "
                             f"are allowed ({purpose.port_hint})")
    return host, port


async def _addresses(shown: str, host: str, port: int, resolver: Resolver,
                     purpose: Purpose) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        # A stub or caching resolver may not read numeric hosts as getaddrinfo does.
        return [literal]
    try:
        answers = await asyncio.wait_for(resolver(host, port), RESOLVE_TIMEOUT)
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
    except (OSError, TimeoutError, ValueError) as exc:
        raise UnsafeURLError(f"{purpose.noun} {shown}: host {host!r} cannot be resolved "
                             f"({type(exc).__name__}: {exc}): it must be a public DNS name "
                             "or address") from None
    if not found:
        raise UnsafeURLError(f"{purpose.noun} {shown}: host {host!r} has no addresses: it must "
                             "be a public DNS name or address")
    return found


async def check_url(url: str | httpx.URL, *, allow_private: bool,
                    resolver: Resolver = resolve, purpose: Purpose = WEBHOOK) -> Target:
    """Check ``url`` and resolve its host once; raise :class:`UnsafeURLError` if refused."""
    raw, parsed = _parse(url, purpose)
    host, port = _check_form(raw, parsed, allow_private, purpose)
    shown = _shown(raw, parsed)
    found = await _addresses(shown, host, port, resolver, purpose)
    if not allow_private:
        for ip in found:
            why = _why_not_public(ip)
            if why is not None:
                raise UnsafeURLError(f"{purpose.noun} {shown} resolves to {ip}, {why}: "
                                     f"{purpose.plural} must reach a public host "
                                     f"({purpose.private_hint})")
    first = found[0]
    # A v4-mapped address is that IPv4 host; connect to it as such, not through a v6 socket.
    if isinstance(first, IPv6Address) and first.ipv4_mapped:
        first = first.ipv4_mapped
    return Target(url=raw, scheme=parsed.scheme, host=host, port=port, address=str(first))


def check_url_sync(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """:func:`check_url` for code that is not async (the CLI, sync request handlers)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(check_url(url, allow_private=allow_private, resolver=resolver))
    # Called from inside an event loop's thread: asyncio.run would refuse, so use another.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, check_url(url, allow_private=allow_private,
                                                  resolver=resolver)).result()


def pin(request: httpx.Request, target: Target) -> None:
    """Point ``request`` at ``target.address`` while it keeps presenting the original name."""
    ip = ipaddress.ip_address(target.address)
    if "host" not in request.headers:
        request.headers["host"] = request.url.netloc.decode("ascii")
    request.url = request.url.copy_with(host=str(ip))
    if target.scheme == "https":
        # The certificate is then checked against the name, not the address.
        request.extensions["sni_hostname"] = target.host


class PinnedTransport(httpx.AsyncBaseTransport):
    """Checks each request's URL and connects to the address that was checked."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve,
                 inner: httpx.AsyncBaseTransport | None = None,
                 purpose: Purpose = WEBHOOK) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.purpose = purpose
        # No idle connections kept: a pooled TLS connection is keyed by address only, and
        # would carry a request for another name that never had its certificate checked.
        self.inner = inner or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = await check_url(request.url, allow_private=self.allow_private,
                                 resolver=self.resolver, purpose=self.purpose)
        pin(request, target)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
