"""Reading the images a brief names (cast pictures, first and last frames), once, up front.

Invariants:

* Every image is read, checked and hashed before anything is planned, written or paid
  for. One that cannot be used is refused with :class:`ImageError`, naming it as the brief
  wrote it and saying what is allowed: a missing or unreadable file, a failed download,
  bytes that are not an image, an image over ``max_image_bytes`` or ``MAX_SIDE`` pixels
  (or under ``MIN_SIDE``), a type other than PNG, JPEG or WebP (the ones every vendor
  reads), an animation, or more than ``max_images`` images.
* Plans and shot keys see only the SHA-256 of the bytes (:class:`ImageRef`): moving or
  renaming a file, or serving it from another URL, changes no key; changing one pixel
  changes the keys of the shots that send it.
* A URL is fetched here, once, so the key covers the bytes fetched, and those very bytes
  are what vendors are sent (never the URL, which could serve other bytes later).
* Where images come from is the caller's policy, a :data:`Reader`. The library and the
  CLI (:func:`local_reader`) read paths, relative to the brief file's folder (or the
  working directory for text and stdin), and fetch any http(s) URL: the user is on their
  own machine. The service refuses paths and fetches URLs through its SSRF guard
  (:func:`fetch_all` with the guard's transport, see ``service.actions``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
from PIL import Image, UnidentifiedImageError

from .core.brief import Brief, ImageRef
from .errors import ImageError
from .settings import Settings

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MIN_SIDE = 16
MAX_SIDE = 8192
MAX_REDIRECTS = 5
Reader = Callable[[str], bytes]


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def inspect(source: str, data: bytes, settings: Settings) -> ImageRef:
    """What the bytes ``data`` read from ``source`` are, or ImageError if unusable."""
    if not data:
        raise ImageError(f"image {source} is empty")
    if len(data) > settings.max_image_bytes:
        raise ImageError(f"image {source} has {len(data)} bytes, over the "
                         f"{settings.max_image_bytes} allowed (SHOTLINE_MAX_IMAGE_BYTES)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # the header only: nothing decoded yet
                kind, (width, height) = image.format, image.size
                frames = getattr(image, "n_frames", 1)
                _check_size(source, width, height)
                image.load()  # decode it all: a truncated or corrupt file fails here
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image {source} is not a readable image ({type(exc).__name__}: "
                         f"{str(exc)[:200]}); give a PNG, JPEG or WebP file") from None
    if kind not in FORMATS:
        raise ImageError(f"image {source} is {kind}; give PNG, JPEG or WebP, which every "
                         "vendor reads")
    if frames > 1:
        raise ImageError(f"image {source} is animated ({frames} frames); give a still image")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return ImageRef(sha256=digest, mime=FORMATS[kind], width=width, height=height,
                    bytes=len(data))


def _check_size(source: str, width: int, height: int) -> None:
    if max(width, height) > MAX_SIDE or min(width, height) < MIN_SIDE:
        raise ImageError(f"image {source} is {width}x{height} px; sides must be "
                         f"{MIN_SIDE} to {MAX_SIDE} px")


def read(brief: Brief, reader: Reader, settings: Settings) -> Brief:
    """``brief`` with its images read: :attr:`Brief.images` (what each source holds) and
    :attr:`Brief.image_data` (the bytes by hash). Sources read before are not read again."""
    sources = [s for s in brief.image_sources() if s not in brief.images]
    if len(brief.image_sources()) > settings.max_images:
        raise ImageError(f"the brief names {len(brief.image_sources())} images, over the "
                         f"{settings.max_images} allowed (SHOTLINE_MAX_IMAGES)")
    refs = dict(brief.images)
    data = dict(brief.image_data)
    for source in sources:
        blob = reader(source)
        ref = inspect(source, blob, settings)
        refs[source] = ref
        data[ref.sha256] = blob
    return dataclasses.replace(brief, images=refs, image_data=data)


def local_reader(base: Path, settings: Settings) -> Reader:
    """How the library and the CLI read an image: a path (relative to ``base``) or a URL."""
    def read_one(source: str) -> bytes:
        if is_url(source):
            return fetch(source, settings)
        if "://" in source:
            raise ImageError(f"image {source}: only files and http(s) URLs are read")
        path = Path(source).expanduser()
        path = path if path.is_absolute() else base / path
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise ImageError(f"image {source} is not a file ({path})")
            if size > settings.max_image_bytes:
                raise ImageError(f"image {source} has {size} bytes, over the "
                                 f"{settings.max_image_bytes} allowed (SHOTLINE_MAX_IMAGE_BYTES)")
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"image {source} does not exist (looked for {path}; a relative "
                             "path is read from the brief file's folder)") from None
        except ImageError:
            raise
        except OSError as exc:
            raise ImageError(f"cannot read image {source}: {exc.strerror or exc}") from None
    return read_one


def fetch(url: str, settings: Settings) -> bytes:
    """GET ``url`` (following redirects), at most ``max_image_bytes``; ImageError if not."""
    try:
        with httpx.Client(timeout=settings.image_timeout, follow_redirects=True,
                          max_redirects=MAX_REDIRECTS) as client, \
                client.stream("GET", url) as resp:
            _answered(url, resp)
            chunks, size = [], 0
            for chunk in resp.iter_bytes(1 << 16):
                size += len(chunk)
                _limit(url, size, settings)
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise ImageError(f"image {url} could not be fetched ({type(exc).__name__}); check the "
                         "URL, or download it and give the file") from None


async def fetch_all(urls: Iterable[str], client: httpx.AsyncClient,
                    settings: Settings) -> dict[str, bytes]:
    """GET each URL with ``client`` (built with ``follow_redirects=False``), following
    redirects here, one hop at a time, so every hop goes through the client's transport
    (the service's SSRF guard checks each one)."""
    found: dict[str, bytes] = {}
    for url in dict.fromkeys(urls):
        target = httpx.URL(url)
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with client.stream("GET", target) as resp:
                    if resp.has_redirect_location:
                        target = target.join(resp.headers["location"])
                        continue
                    _answered(url, resp)
                    chunks, size = [], 0
                    async for chunk in resp.aiter_bytes(1 << 16):
                        size += len(chunk)
                        _limit(url, size, settings)
                        chunks.append(chunk)
                    found[url] = b"".join(chunks)
                    break
            else:
                raise ImageError(f"image {url}: more than {MAX_REDIRECTS} redirects")
        except httpx.HTTPError as exc:
            raise ImageError(f"image {url} could not be fetched ({type(exc).__name__}); check "
                             "the URL") from None
    return found


def _answered(url: str, resp: httpx.Response) -> None:
    if not resp.is_success:
        raise ImageError(f"image {url} could not be fetched: the server answered "
                         f"{resp.status_code}")
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) == 0:
        raise ImageError(f"image {url} is empty")


def _limit(url: str, size: int, settings: Settings) -> None:
    if size > settings.max_image_bytes:
        raise ImageError(f"image {url} is over the {settings.max_image_bytes} bytes allowed "
                         "(SHOTLINE_MAX_IMAGE_BYTES); nothing more was read")

