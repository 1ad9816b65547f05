"""How the fake vendors read the images a request carries, and refuse malformed ones.

Each vendor documents where its images go and what it refuses (see the adapters'
docstrings); the fakes answer a malformed request with the vendor's own kind of 4xx, so a
test fails if an adapter sends images the vendor would reject. ``problem(...)`` functions
return what the vendor would say, or None; :func:`decode` turns a data URI (or bare
base64) back into the bytes, so a test can compare them with the images it made.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

DATA_URI = re.compile(r"data:(?P<mime>image/(?:png|jpeg|webp));base64,(?P<data>[A-Za-z0-9+/=]+)")


def decode(value: Any, *, bare: bool = False) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URI (or of bare base64); ValueError if not."""
    if not isinstance(value, str):
        raise ValueError(f"an image must be a string, got {type(value).__name__}")
    payload = value
    if not bare:
        m = DATA_URI.fullmatch(value)
        if m is None:
            raise ValueError(f"not an image data URI: {value[:40]!r}")
        payload = m["data"]
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the image's base64 is malformed") from None


def _cites(prompt: str, word: str, count: int) -> str | None:
    missing = [n for n in range(1, count + 1) if f"@{word}{n}" not in prompt]
    return f"the prompt does not cite @{word}{missing[0]}" if missing else None


def fal_problem(endpoint: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """(field, message) for an input fal's schema for ``endpoint`` would refuse (422)."""
    route = endpoint.rsplit("/", 1)[-1]
    images = {"start_image_url", "end_image_url", "image_url", "image_urls", "elements"}
    try:
        if route not in ("image-to-video", "reference-to-video"):  # a text route
            if extra := images & set(body):
                return sorted(extra)[0], "extra inputs are not permitted on the text route"
            return None
        if "kling" in endpoint:
            return _fal_kling(endpoint, route, body)
        if route == "reference-to-video":
            urls = body.get("image_urls") or []
            if not 1 <= len(urls) <= 9 or {"image_url", "end_image_url"} & set(body):
                return "image_urls", "1 to 9 reference images, and no frames"
            [decode(u) for u in urls]
            problem = _cites(body["prompt"], "Image", len(urls))
            return ("prompt", problem) if problem else None
        decode(body["image_url"])
        if "end_image_url" in body:
            decode(body["end_image_url"])
        return None
    except (KeyError, ValueError) as exc:
        return "input", f"{type(exc).__name__}: {exc}"


def _fal_kling(endpoint: str, route: str, body: dict[str, Any]) -> tuple[str, str] | None:
    o3 = "/o3/" in endpoint
    first = "image_url" if o3 and route == "image-to-video" else "start_image_url"
    if route == "image-to-video" or "end_image_url" in body:
        decode(body[first])  # KeyError: the field is required here
    if "end_image_url" in body:
        decode(body["end_image_url"])
    if route == "image-to-video" and o3 and "elements" in body:
        return "elements", "extra inputs are not permitted"
    elements = body.get("elements", [])
    if route == "reference-to-video" and not elements:
        return "elements", "a reference route needs elements"
    for element in elements:
        decode(element["frontal_image_url"])
        views = element["reference_image_urls"]
        if not 1 <= len(views) <= 3:
            return "elements", "reference_image_urls takes 1 to 3 images"
        [decode(v) for v in views]
    problem = _cites(body["prompt"], "Element", len(elements))
    return ("prompt", problem) if problem else None


def byteplus_problem(body: dict[str, Any]) -> str | None:
    """What ModelArk answers 400 to in ``content``, or None."""
    roles = []
    try:
        for item in body["content"][1:]:
            if item["type"] != "image_url" or item.get("role") not in (
                    "first_frame", "last_frame", "reference_image"):
                return f"content item {item.get('type')}/{item.get('role')} is not valid"
            decode(item["image_url"]["url"])
            roles.append(item["role"])
    except (KeyError, ValueError) as exc:
        return f"The parameter `content` is not valid: {exc}"
    if "reference_image" in roles and ({"first_frame", "last_frame"} & set(roles)):
        return ("The parameter `content` specified in the request is not valid: first/last "
                "frame content cannot be mixed with reference media content.")
    if "last_frame" in roles and "first_frame" not in roles:
        return "a last_frame needs a first_frame"
    if roles.count("reference_image") > 9:
        return "at most 9 reference images"
    return None


def runway_problem(path: str, body: dict[str, Any]) -> str | None:
    """What Runway answers 400 to about images (SDK 5.24 types), or None."""
    try:
        if path.endswith("text_to_video"):
            refs = body.get("references", [])
            if refs and not str(body["model"]).startswith("seedance"):
                return f"references are not accepted for model {body['model']}"
            if len(refs) > 9:
                return "at most 9 references"
            for ref in refs:
                if set(ref) != {"uri"}:
                    return "a reference is {uri}"
                decode(ref["uri"])
            return None
        images = body["promptImage"]
        positions = [i.get("position") for i in images]
        if positions not in (["first"], ["first", "last"]):
            return f"promptImage positions {positions} are not valid"
        for image in images:
            decode(image["uri"])
    except (KeyError, ValueError) as exc:
        return f"Validation of body failed: {exc}"
    return None


def google_problem(body: dict[str, Any]) -> str | None:
    """What Vertex answers 400 INVALID_ARGUMENT to about images, or None."""
    instance = body["instances"][0]
    try:
        for field in ("image", "lastFrame"):
            if field in instance:
                if instance[field]["mimeType"] not in ("image/png", "image/jpeg"):
                    return f"{field}.mimeType is not supported"
                decode(instance[field]["bytesBase64Encoded"], bare=True)
        if "lastFrame" in instance and "image" not in instance:
            return "lastFrame requires image"
        refs = instance.get("referenceImages", [])
        if refs and ({"image", "lastFrame"} & set(instance)):
            return "referenceImages cannot be used with image or lastFrame"
        if refs and body["parameters"]["durationSeconds"] != 8:
            return "referenceImages need durationSeconds 8"
        if len(refs) > 3:
            return "at most 3 asset reference images"
        for ref in refs:
            if str(ref.get("referenceType")).lower() != "asset":  # an enum in any case
                return "referenceType must be asset"
            decode(ref["image"]["bytesBase64Encoded"], bare=True)
    except (KeyError, ValueError) as exc:
        return f"Invalid JSON payload received: {exc}"
    return None
