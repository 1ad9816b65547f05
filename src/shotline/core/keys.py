"""Content keys: the identity of a clip or a render, used as the cache key.

A key is ``sha256:`` + the hex SHA-256 of the canonical JSON (sorted keys, no spaces,
UTF-8, no ASCII escaping) of everything that changes the output. Two requests with the
same key would produce the same clip, so the second one is served from the store.
Changing the canonical form or the set of fields bumps ``KEY_VERSION``, so old and new
keys can never collide silently. Pure: no I/O.

Input images enter a key by the hash of their bytes, never by their path or URL, each
tagged with its role (``first_frame:``, ``last_frame:``, ``reference:<member>:``), since
the same picture as a first frame or as a reference makes a different clip. A shot
without images keys exactly as before images existed (an empty list), so adding them
needed no new ``KEY_VERSION`` and no stored clip was orphaned.
A key is also scoped to whose cache it is in (``scope``: a tenant id), unless the cache is
shared: two tenants asking for the same clip get different keys, so neither is served,
nor can time, the other's clip. The unscoped form (the CLI's own renders, a shared cache,
renders planned before scopes existed) is the key exactly as it was before scopes: the
field is only present when set, so no stored key changed meaning.

A continuation (``PlannedShot.continues``) starts from the last frame of the shot before,
which exists only once that clip is made; its key covers that shot's key instead of the
frame's bytes (``first_frame:after:<key>:<frame>@<fps>``, the frame being the last one the
output shows of it). The clip before is a function of its key, so this covers the frame,
and editing one word of a shot changes its key and the keys of the shots that continue it,
nothing else. Unchained shots key exactly as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capabilities import Capabilities
    from .planner import Plan, PlannedShot

KEY_VERSION = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def shot_key(
    *,
    provider: str,
    model: str,
    prompt: str,
    seconds: int,
    size: str,
    fps: int,
    audio: bool,
    seed: int | None,
    take: int,
    images: Sequence[str] = (),
    scope: str | None = None,
) -> str:
    """The key of one provider call; ``images`` are the content hashes of input images,
    ``scope`` the tenant whose cache it belongs to (None: the CLI's, or a shared cache)."""
    scoped = {} if scope is None else {"scope": scope}
    return digest(
        {
            **scoped,
            "v": KEY_VERSION,
            "kind": "shot",
            "provider": provider,
            "model": model,
            "prompt": prompt,
            "seconds": seconds,
            "size": size,
            "fps": fps,
            "audio": audio,
            "seed": seed,
            "take": take,
            "images": list(images),
        }
    )


def planned_key(plan: Plan, shot: PlannedShot, caps: Capabilities) -> str:
    """The key of one planned shot when ``caps`` draws it (the renderer's and the estimate's)."""
    if not shot.continues:  # also a take not picked, whose index is a slot past the shots
        return _key(plan, shot, caps, shot_images(shot))
    start = shot.index
    while start > 0 and plan.shots[start].continues:
        start -= 1
    key = ""
    # A chain keys in order, each on the key before; ``shot`` itself as given (a new take).
    for one in [*plan.shots[start : shot.index], shot]:
        before = plan.shots[one.index - 1] if one.continues else None
        after = [] if before is None else [
            f"first_frame:after:{key}:{before.frames - 1}@{plan.fps}"]
        key = _key(plan, one, caps, after + shot_images(one))
    return key


def _key(plan: Plan, shot: PlannedShot, caps: Capabilities, images: list[str]) -> str:
    fps = plan.fps if plan.fps in caps.fps else caps.default_fps
    return shot_key(
        provider=caps.provider, model=caps.model, prompt=shot.prompt, seconds=shot.seconds,
        size=plan.size, fps=fps, audio=shot.audio, seed=plan.seed, take=shot.take,
        images=images, scope=plan.scope,
    )


def shot_images(shot: PlannedShot) -> list[str]:
    """The input images of ``shot`` as its key covers them: role-tagged hashes of bytes."""
    tagged = [f"{role}:{image.sha256}" for role, image in
              (("first_frame", shot.first_frame), ("last_frame", shot.last_frame)) if image]
    return tagged + [f"reference:{r.name}:{r.sha256}" for r in shot.references]


def render_key(shot_keys: Sequence[str], stitch: dict[str, Any]) -> str:
    """The key of a stitched output: the ordered shot keys plus every stitch setting."""
    return digest({"v": KEY_VERSION, "kind": "render", "shots": list(shot_keys), "stitch": stitch})
