"""Small real images for tests, made with Pillow, and the ImageInput a provider receives."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from shotline.providers.base import ImageInput


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (320, 320),
        fmt: str = "PNG") -> bytes:
    """A one-colour image's bytes (320 px: over every vendor's smallest side)."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def image_input(data: bytes, *, mime: str = "image/png", name: str = "",
                size: tuple[int, int] = (320, 320)) -> ImageInput:
    """``data`` as a provider receives it (the sizes are taken as given, not decoded)."""
    return ImageInput("sha256:" + hashlib.sha256(data).hexdigest(), data, mime, size[0], size[1],
                      name)
