"""The input images of a planned shot, as a provider receives them.

A plan knows its images by the hash of their bytes (and their type and size); the bytes
themselves come from the caller (a brief just read) or from the store (a render queued or
resumed). Every image is checked against its hash here (:class:`ImageInput`), so a call
sends exactly the bytes its shot key covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.planner import Plan, PlannedShot
from ..errors import MediaError
from ..providers.base import ImageInput
from ..store import images
from ..store.db import Database


def for_shot(plan: Plan, shot: PlannedShot, blobs: Mapping[str, bytes]) -> dict[str, Any]:
    """``ShotRequest`` fields for ``shot``'s frames and references, from ``blobs`` (by hash)."""
    def image(sha256: str, name: str = "") -> ImageInput:
        data = blobs.get(sha256)
        if data is None:
            raise MediaError(f"shot {shot.number}: its input image {sha256} is not stored; "
                             "render the brief again, which reads its images anew")
        known = plan.image(sha256)
        return ImageInput(sha256, data, known.mime, known.width, known.height, name)

    return {
        "first_frame": image(shot.first_frame.sha256) if shot.first_frame else None,
        "last_frame": image(shot.last_frame.sha256) if shot.last_frame else None,
        "references": tuple(image(r.sha256, r.name) for r in shot.references),
    }


def gather(db: Database, plan: Plan, given: Mapping[str, bytes]) -> dict[str, bytes]:
    """The bytes of ``plan``'s input images: ``given`` (just read), the rest from the store."""
    missing = [i.sha256 for i in plan.images() if i.sha256 not in given]
    return {**images.load(db, missing), **given}
