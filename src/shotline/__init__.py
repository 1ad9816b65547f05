"""shotline: a written brief in, a finished multi-shot video out, without runaway cost.

Importing the package loads no codec: the render results and errors live beside the
renderer, which needs PyAV and ffmpeg, and are imported the first time they are named.
"""

from __future__ import annotations

import typing as _typing

from .api import (
    Options,
    Request,
    arender,
    estimate,
    plan,
    read_brief,
    render,
    resolve,
    resume,
)
from .core.brief import Brief, CastMember, ImageRef, Segment, parse_brief
from .core.capabilities import Capabilities, ModelTable, OverrideExpiredWarning, load_table
from .core.planner import Plan, PlannedShot, PlanOptions
from .core.pricing import Estimate, ShotCost
from .errors import (
    AmbiguousSubmitError,
    BriefError,
    BudgetError,
    CapabilityError,
    ConfigError,
    IdempotencyConflict,
    IdempotencyMismatch,
    ImageError,
    Interrupted,
    MediaError,
    NotFoundError,
    OverrideError,
    PermanentError,
    ProviderError,
    RetryableError,
    ShotlineError,
    StateError,
    UnsafeURLError,
    UserError,
)
from .settings import Settings

if _typing.TYPE_CHECKING:
    from .engine.renderer import RenderFailed, RenderResult, RenderStopped, ShotEvent, ShotResult

__version__ = "0.1.0"
_FROM_RENDERER = frozenset({"RenderFailed", "RenderResult", "RenderStopped", "ShotEvent",
                            "ShotResult"})


def __getattr__(name: str) -> _typing.Any:
    if name in _FROM_RENDERER:
        from .engine import renderer

        return getattr(renderer, name)
    raise AttributeError(f"module 'shotline' has no attribute {name!r}")

__all__ = [
    "AmbiguousSubmitError",
    "Brief",
    "BriefError",
    "BudgetError",
    "Capabilities",
    "CapabilityError",
    "CastMember",
    "ConfigError",
    "Estimate",
    "IdempotencyConflict",
    "IdempotencyMismatch",
    "ImageError",
    "ImageRef",
    "Interrupted",
    "MediaError",
    "ModelTable",
    "NotFoundError",
    "Options",
    "OverrideError",
    "OverrideExpiredWarning",
    "PermanentError",
    "Plan",
    "PlanOptions",
    "PlannedShot",
    "ProviderError",
    "RenderFailed",
    "RenderResult",
    "RenderStopped",
    "Request",
    "RetryableError",
    "Segment",
    "Settings",
    "ShotCost",
    "ShotEvent",
    "ShotResult",
    "ShotlineError",
    "StateError",
    "UnsafeURLError",
    "UserError",
    "arender",
    "estimate",
    "load_table",
    "parse_brief",
    "plan",
    "read_brief",
    "render",
    "resolve",
    "resume",
]
