"""shotline: a written brief in, a finished multi-shot video out, without runaway cost."""

from __future__ import annotations

from .api import Options, Request, arender, estimate, plan, read_brief, render, resolve
from .brief import Brief, Segment, parse_brief
from .capabilities import Capabilities, ModelTable, OverrideExpiredWarning, load_table
from .errors import (
    AmbiguousSubmitError,
    BriefError,
    BudgetError,
    CapabilityError,
    ConfigError,
    MediaError,
    OverrideError,
    PermanentError,
    ProviderError,
    RetryableError,
    ShotlineError,
    UserError,
)
from .planner import Plan, PlannedShot, PlanOptions
from .pricing import Estimate, ShotCost
from .renderer import RenderFailed, RenderResult, ShotEvent, ShotResult
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AmbiguousSubmitError",
    "Brief",
    "BriefError",
    "BudgetError",
    "Capabilities",
    "CapabilityError",
    "ConfigError",
    "Estimate",
    "MediaError",
    "ModelTable",
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
    "Request",
    "RetryableError",
    "Segment",
    "Settings",
    "ShotCost",
    "ShotEvent",
    "ShotResult",
    "ShotlineError",
    "UserError",
    "arender",
    "estimate",
    "load_table",
    "parse_brief",
    "plan",
    "read_brief",
    "render",
    "resolve",
]
