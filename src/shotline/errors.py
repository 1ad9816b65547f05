"""One exception tree for the whole package.

    ShotlineError
    ├── UserError                 bad input; nothing was changed, nothing was spent
    │   ├── InvalidRequest        an option out of its range (core/inputs.py says which)
    │   ├── BriefError            the brief cannot be parsed or planned
    │   ├── CapabilityError       the model cannot do what was asked (or is sunset)
    │   ├── OverrideError         a capability override file is malformed
    │   ├── ConfigError           a setting or a missing credential
    │   ├── UnsafeURLError        an outbound URL (a webhook) the SSRF guard refuses
    │   └── IdempotencyMismatch   an Idempotency-Key reused for a different request (422)
    ├── IdempotencyConflict       the first request with that key is still running (409)
    ├── BudgetError               the estimate does not fit a spending limit
    ├── ProviderError             something a vendor (or the local renderer) said
    │   ├── RetryableError        rate limit, 5xx, dropped poll: safe to try again
    │   ├── PermanentError        moderation, validation, auth, quota: never retried
    │   └── AmbiguousSubmitError  the submit may or may not have been accepted:
    │                             reconcile before anything else, never resubmit blindly
    └── MediaError                a clip or an output failed probing or verification

    KeyboardInterrupt
    └── Interrupted               Ctrl-C during a render: how many paid shots are in
                                  flight; rendering again resumes them (exit code 130)

Callers catch at the level they need: the CLI turns every ``ShotlineError`` into a
message and an exit code, the renderer retries only ``RetryableError``.
"""

from __future__ import annotations


class ShotlineError(Exception):
    """Base of every error shotline raises on purpose."""

    exit_code = 1
    http_status = 500  # what the HTTP service answers with


class UserError(ShotlineError):
    """The input was wrong; the message says what was wrong and what is allowed."""

    exit_code = 2
    http_status = 422


class InvalidRequest(UserError):
    """An option (a seed, a frame rate, an amount...) outside what is allowed; the message
    names it as the user wrote it and says what is allowed (see ``core/inputs.py``)."""


class BriefError(UserError):
    """A brief that cannot be parsed or planned."""


class CapabilityError(UserError):
    """The chosen model cannot do what was asked, or no longer takes new work."""


class OverrideError(UserError):
    """A capability override that is malformed or lacks its reason or expiry."""


class ConfigError(UserError):
    """A setting has a bad value, or a needed credential is missing."""


class IdempotencyMismatch(UserError):
    """An Idempotency-Key already used for a different request (method, path or body)."""

    http_status = 422

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (
            "this Idempotency-Key was already used for a different request (another method, "
            "path or body): use a new key for a new request"))


class IdempotencyConflict(ShotlineError):
    """The first request with this Idempotency-Key has not finished; this one did nothing."""

    http_status = 409
    retry_after = 1  # seconds, for the Retry-After header

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (
            "a request with this Idempotency-Key is still in progress: retry shortly with the "
            "same key to get its result"))


class UnsafeURLError(UserError):
    """A user-supplied outbound URL that the SSRF guard refuses to call.

    Raised at registration and again before every request, since a name can come to
    resolve to another address in between. The message names the URL (never a secret).
    """


class ImageError(UserError):
    """An image a brief names cannot be used: missing, unreadable, not an image, too big,
    of a type vendors do not take, or (in the service) a path instead of a URL. Raised
    before anything is written; the message names the image as the brief wrote it."""


class NotFoundError(UserError):
    """No such render, key or file for this tenant (another tenant's things look absent)."""

    http_status = 404


class StateError(UserError):
    """The action does not apply to the render in its current state (e.g. approving twice)."""

    http_status = 409


class BudgetError(ShotlineError):
    """The render's estimate does not fit the remaining budget."""

    exit_code = 3
    http_status = 402


class ProviderError(ShotlineError):
    """An error reported by a provider; ``reason`` is the vendor's own words."""

    exit_code = 4
    http_status = 502

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


class QueueError(ShotlineError):
    """The task queue's broker did not take a message; nothing was queued."""

    http_status = 503


class StorageError(ShotlineError):
    """The object store failed an operation that may succeed if tried again."""

    http_status = 503


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a render. A ``KeyboardInterrupt``, so ``except Exception`` never hides
    it; ``in_flight`` counts the shots the vendor was making (paid for, job ids stored)."""

    exit_code = 130

    def __init__(self, in_flight: int) -> None:
        shots = "1 shot is" if in_flight == 1 else f"{in_flight} shots are"
        super().__init__(f"interrupted: {shots} paid and in flight; run the same command "
                         "again to resume")
        self.in_flight = in_flight
