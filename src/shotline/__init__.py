"""shotline: a written brief in, a finished multi-shot video out, without runaway cost."""

from __future__ import annotations

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
from .engine.renderer import RenderFailed, RenderResult, RenderStopped, ShotEvent, ShotResult
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

__version__ = "0.1.0"

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
