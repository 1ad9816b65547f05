"""Removing our secrets from text a vendor sent back, in every form the text can hold them.

A vendor that echoes a request back (an error quoting the Authorization header, a URL with
the key in its query, a JSON dump of the request) may carry the key:

* as written, or any prefix of it of :data:`MIN_PREFIX` characters or more (a vendor
  that shows "sk-abc123de..." has still shown most of it);
* percent-encoded (``%3A`` for ``:``, in either case, or encoded twice), JSON-escaped
  (``\\u0041``, ``\\/``), or any mix of these, character by character;
* inside base64, as HTTP Basic credentials are (``base64("user:" + key)``): whatever
  comes before the key, the base64 of the key's middle is one of three strings, and the
  whole base64 token holding one is removed.

:func:`scrub` replaces each with ``[redacted]``. It runs on the whole text before anything
is cut short: a key near the end of a long body is found, and no cut leaves part of one.
Secrets shorter than :data:`MIN_SECRET` characters are not scrubbed: too short to be a
key, and replacing them would mangle ordinary words.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_SECRET = 6
MIN_PREFIX = 8
# A base64 (or base64url) token, with its padding: found once per text, in linear time.
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]+=*")


def _char(c: str) -> str:
    """A pattern for one character of a secret in any of the forms above, in either case.

    Escapes are tried before the character itself, and a backslash goes before only the
    characters JSON escapes that way: otherwise a match could take the ``\\`` or the ``u`` of
    an escape (``\\u0055``) for a character of the key, end inside the escape, and leave the
    rest of the key behind it.
    """
    # Percent-encoded (each byte of it, once or twice), or JSON's \u escape.
    escapes = ["".join(f"%(?:25)?{byte:02x}" for byte in c.encode("utf-8"))]
    if ord(c) < 0x10000:
        escapes.append(rf"\\u{ord(c):04x}")
    if c in '/"\\':
        escapes.append(rf"\\{re.escape(c)}")  # JSON's \/, \" and \\
    return "(?i:" + "|".join([*escapes, re.escape(c)]) + ")"


@functools.lru_cache(maxsize=64)
def _patterns(secret: str) -> tuple[re.Pattern[str], tuple[re.Pattern[str], ...], frozenset[str]]:
    """(the secret's first MIN_PREFIX characters, each further character, base64 cores)."""
    units = [_char(c) for c in secret]
    head = re.compile("".join(units[:MIN_PREFIX]))
    rest = tuple(re.compile(u) for u in units[MIN_PREFIX:])
    raw = secret.encode("utf-8")
    cores = set()
    for skip in range(3):  # the key's offset in the encoded string, modulo 3
        middle = raw[skip:]
        middle = middle[: len(middle) // 3 * 3]
        if len(middle) >= 6:
            encoded = base64.b64encode(middle).decode("ascii")
            cores.update({encoded, encoded.replace("+", "-").replace("/", "_")})
    return head, rest, frozenset(cores)


def _spans(text: str, secret: str, tokens: list[re.Match[str]]) -> list[tuple[int, int]]:
    head, rest, cores = _patterns(secret)
    found = []
    if len(secret) < MIN_PREFIX:
        found += [m.span() for m in re.finditer(re.escape(secret), text)]
    else:
        def extended(end: int) -> int:
            for unit in rest:  # extend while the text goes on with the secret
                more = unit.match(text, end)
                if more is None:
                    break
                end = more.end()
            return end

        pos = 0
        while (m := head.search(text, pos)) is not None:
            start, end = m.start(), extended(m.end())
            # A match may start early, on text before the secret that reads like its start
            # ("00" then "00000000"): look again from each later character it covers and keep
            # the furthest end. A probe fails at once unless the secret repeats itself.
            for probe in range(start + 1, end):
                if (again := head.match(text, probe)) is not None:
                    end = max(end, extended(again.end()))
            found.append((start, end))
            pos = end
    found += [t.span() for t in tokens if any(core in t.group() for core in cores)]
    return found


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every form of every secret (of :data:`MIN_SECRET` characters or more)
    replaced by ``[redacted]``."""
    spans: list[tuple[int, int]] = []
    wanted = {s for s in secrets if s and len(s) >= MIN_SECRET}
    tokens = list(_B64_RUN.finditer(text)) if wanted else []
    for secret in wanted:
        spans += _spans(text, secret, tokens)
    if not spans:
        return text
    out, pos = [], 0
    for start, end in sorted(spans):
        if end <= pos:
            continue
        out.append(text[pos:max(start, pos)])
        out.append(REDACTED if start >= pos else "")
        pos = end
    out.append(text[pos:])
    return "".join(out)
