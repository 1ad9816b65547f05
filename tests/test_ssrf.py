from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest

from shotline.errors import UnsafeURLError, UserError
from shotline.service.ssrf import (
    PinnedTransport,
    Resolver,
    Target,
    check_url,
    check_url_sync,
    is_public,
    resolve,
)

NAMES = {
    "private.example": ["10.0.0.7"],
    "mixed.example": ["93.184.215.14", "192.168.1.10"],
    "public.example": ["8.8.8.8"],
    "v6.example": ["2606:4700::1111"],
    "empty.example": [],
}


async def stub(host: str, port: int) -> list[str]:
    """A resolver that knows only NAMES, and never IP literals (check_url reads those)."""
    if host not in NAMES:
        raise OSError(f"stub resolver has no answer for {host!r}")
    return NAMES[host]


def check(url: str, allow_private: bool = False) -> Target:
    return asyncio.run(check_url(url, allow_private=allow_private, resolver=stub))


REFUSED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://10.0.0.1/x", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.64.0.1/", "non-public"),
    ("http://192.0.0.170/", "private"),
    ("http://198.18.0.1/", "private"),
    ("http://224.0.0.1/", "multicast"),
    ("http://255.255.255.255/", "private"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fd00::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[::ffff:127.0.0.1]/", "IPv6 form of 127.0.0.1"),
    ("http://[::ffff:169.254.169.254]/", "IPv6 form of 169.254.169.254"),
    ("http://[64:ff9b::a9fe:a9fe]/", "IPv6 form of 169.254.169.254"),
    ("http://[64:ff9b:1::a9fe:a9fe]/", "local-use NAT64"),
    ("http://[2002:a9fe:a9fe::1]/", "IPv6 form of 169.254.169.254"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "resolves to 2001:0:4136"),
    ("http://[::127.0.0.1]/", "reserved"),
    ("http://2130706433/", "resolves to 127.0.0.1"),
    ("http://0x7f.1/", "resolves to 127.0.0.1"),
    ("http://127.1/", "resolves to 127.0.0.1"),
    ("http://017700000001/", "resolves to 127.0.0.1"),
    ("http://127.0.0.1./", "resolves to 127.0.0.1"),
    ("https://private.example/hook", "resolves to 10.0.0.7"),
    ("https://mixed.example/hook", "resolves to 192.168.1.10"),
    ("https://unknown.example/hook", "cannot be resolved"),
    ("https://empty.example/hook", "has no addresses"),
    ("http://user:pw@public.example/", "user name or password"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://public.example/_x", "scheme 'gopher'"),
    ("ftp://public.example/", "scheme 'ftp'"),
    ("http://93.184.215.14:22/", "port 22"),
    ("http:///hook", "has no host"),
    ("http://[::1/", "not a valid URL"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED, ids=[u for u, _ in REFUSED])
def test_refused(url: str, why: str) -> None:
    with pytest.raises(UnsafeURLError, match="webhook URL") as caught:
        check(url)
    assert why in str(caught.value)
    assert isinstance(caught.value, UserError)


def test_private_refusal_names_what_is_allowed() -> None:
    with pytest.raises(UnsafeURLError) as caught:
        check("http://10.0.0.1/x")
    assert str(caught.value) == (
        "webhook URL http://10.0.0.1/x resolves to 10.0.0.1, a private address: webhooks "
        "must reach a public host (SHOTLINE_ALLOW_PRIVATE_WEBHOOKS=1 allows private targets, "
        "for local development only)")


def test_password_is_not_repeated_in_the_message() -> None:
    with pytest.raises(UnsafeURLError) as caught:
        check("https://user:hunter2@public.example/")
    assert "hunter2" not in str(caught.value)


PASSED = [
    ("https://93.184.215.14/hook", "93.184.215.14"),
    ("https://[2606:4700::1111]/hook", "2606:4700::1111"),
    ("https://public.example/hook", "8.8.8.8"),
    ("https://v6.example/hook", "2606:4700::1111"),
    ("http://public.example:443/", "8.8.8.8"),
    # These reach the IPv4 host itself, so that host is what is judged.
    ("https://[::ffff:8.8.8.8]/", "8.8.8.8"),
    ("https://[64:ff9b::808:808]/", "64:ff9b::808:808"),
    ("https://[2002:808:808::1]/", "2002:808:808::1"),
]


@pytest.mark.parametrize(("url", "address"), PASSED, ids=[u for u, _ in PASSED])
def test_public_targets_pass(url: str, address: str) -> None:
    target = check(url)
    assert target.address == address and target.url == url


def test_target_fields() -> None:
    assert check("https://public.example/a?b=1") == Target(
        url="https://public.example/a?b=1", scheme="https", host="public.example", port=443,
        address="8.8.8.8")


def test_allow_private_lifts_address_and_port_rules_only() -> None:
    assert check("http://127.0.0.1:8123/hook", allow_private=True).address == "127.0.0.1"
    assert check("http://private.example:22/", allow_private=True).port == 22
    for url in ("file:///etc/passwd", "http://u:p@127.0.0.1/", "https://unknown.example/"):
        with pytest.raises(UnsafeURLError):
            check(url, allow_private=True)


@pytest.mark.parametrize("url", ["http://public.example:0/", "https://public.example:0/x",
                                 "http://8.8.8.8:00/", "https://public.example:000/"])
@pytest.mark.parametrize("allow_private", [False, True])
def test_port_zero_is_port_zero_and_refused(url: str, allow_private: bool) -> None:
    """``:0`` is read as port 0 (once it was taken for "no port": 80 or 443) and refused,
    even where any other port would be allowed."""
    with pytest.raises(UnsafeURLError, match="port 0"):
        check(url, allow_private=allow_private)
    assert check(url.replace(":000", "").replace(":00", "").replace(":0", "")).port in (80, 443)


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "017700000001"])
def test_system_resolver_reads_numeric_hosts_as_loopback(host: str) -> None:
    assert asyncio.run(resolve(host, 80)) == ["127.0.0.1"]
    with pytest.raises(UnsafeURLError, match="resolves to 127.0.0.1"):
        check_url_sync(f"http://{host}/", allow_private=False)


def test_sync_wrapper_works_inside_a_running_loop() -> None:
    async def inside() -> Target:
        return check_url_sync("https://public.example/", allow_private=False, resolver=stub)

    assert asyncio.run(inside()).address == "8.8.8.8"


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("224.0.0.1", False), ("64:ff9b::a9fe:a9fe", False),
    ("2002:a9fe:a9fe::1", False), ("::ffff:10.0.0.1", False), ("ff0e::1", False),
    ("2001:db8::1", False), ("2606:4700::1111", True),
])
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


# --- the pinned transport ------------------------------------------------------------------


class Recorder:
    def __init__(self, response: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response or httpx.Response(200, text="ok")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response


def send(url: str, recorder: Recorder, resolver: Resolver = stub,
         allow_private: bool = False) -> httpx.Response:
    async def go() -> httpx.Response:
        guard = PinnedTransport(allow_private=allow_private, resolver=resolver,
                                inner=httpx.MockTransport(recorder))
        async with httpx.AsyncClient(transport=guard, follow_redirects=False) as client:
            return await client.post(url, content=b"{}")

    return asyncio.run(go())


def test_request_goes_to_the_checked_address_with_the_original_name() -> None:
    recorder = Recorder()
    assert send("https://public.example/hook?x=1", recorder).status_code == 200
    sent = recorder.requests[0]
    assert sent.url.host == "8.8.8.8" and sent.url.path == "/hook" and sent.url.query == b"x=1"
    assert sent.headers["host"] == "public.example"
    assert sent.extensions["sni_hostname"] == "public.example"


def test_plain_http_needs_no_sni_and_ipv6_is_bracketed() -> None:
    recorder = Recorder()
    send("http://v6.example/hook", recorder)
    sent = recorder.requests[0]
    assert str(sent.url) == "http://[2606:4700::1111]/hook"
    assert sent.headers["host"] == "v6.example" and "sni_hostname" not in sent.extensions


def test_refused_url_never_reaches_the_network() -> None:
    recorder = Recorder()
    with pytest.raises(UnsafeURLError):
        send("https://private.example/hook", recorder)
    assert recorder.requests == []


def test_rebinding_resolver_cannot_move_the_connection() -> None:
    answers = [["93.184.215.14"], ["169.254.169.254"]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), 2) - 1]

    recorder = Recorder()
    send("https://rebind.example/hook", recorder, resolver=rebinding)
    assert len(asked) == 1  # one lookup per request: nothing downstream resolves again
    assert recorder.requests[0].url.host == "93.184.215.14"
    with pytest.raises(UnsafeURLError, match="169.254.169.254"):
        send("https://rebind.example/hook", recorder, resolver=rebinding)
    assert len(recorder.requests) == 1


def test_redirect_to_metadata_is_returned_not_followed() -> None:
    recorder = Recorder(httpx.Response(302, headers={"location": "http://169.254.169.254/"}))
    response = send("https://public.example/hook", recorder)
    assert response.status_code == 302
    assert response.headers["location"] == "http://169.254.169.254/"
    assert len(recorder.requests) == 1
