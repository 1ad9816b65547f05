"""One exception tree for the whole package.

    ShotlineError
    ├── UserError                 bad input; nothing was changed, nothing was spent
    │   ├── BriefError            the brief cannot be parsed or planned
    │   ├── CapabilityError       the model cannot do what was asked (or is sunset)
    │   ├── OverrideError         a capability override file is malformed
    │   └── ConfigError           a setting or a missing credential
    ├── BudgetError               the estimate does not fit a spending limit
    ├── ProviderError             something a vendor (or the local renderer) said
    │   ├── RetryableError        rate limit, 5xx, dropped poll: safe to try again
    │   ├── PermanentError        moderation, validation, auth, quota: never retried
    │   └── AmbiguousSubmitError  the submit may or may not have been accepted:
    │                             reconcile before anything else, never resubmit blindly
    └── MediaError                a clip or an output failed probing or verification

Callers catch at the level they need: the CLI turns every ``ShotlineError`` into a
message and an exit code, the renderer retries only ``RetryableError``.
"""

from __future__ import annotations


class ShotlineError(Exception):
    """Base of every error shotline raises on purpose."""

    exit_code = 1


class UserError(ShotlineError):
    """The input was wrong; the message says what was wrong and what is allowed."""

    exit_code = 2


class BriefError(UserError):
    """A brief that cannot be parsed or planned."""


class CapabilityError(UserError):
    """The chosen model cannot do what was asked, or no longer takes new work."""


class OverrideError(UserError):
    """A capability override that is malformed or lacks its reason or expiry."""


class ConfigError(UserError):
    """A setting has a bad value, or a needed credential is missing."""


class BudgetError(ShotlineError):
    """The render's estimate does not fit the remaining budget."""

    exit_code = 3


class ProviderError(ShotlineError):
    """An error reported by a provider; ``reason`` is the vendor's own words."""

    exit_code = 4

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class RetryableError(ProviderError):
    """A transient failure; ``retry_after`` is the vendor's hint in seconds, if any."""

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    """A failure that repeating the same request cannot fix."""


class AmbiguousSubmitError(ProviderError):
    """The submit's outcome is unknown (timeout or dropped connection on the POST)."""


class MediaError(ShotlineError):
    """A clip or a stitched output that is not what it should be."""

    exit_code = 5
