"""The HTTP API's answers, as the OpenAPI document declares them.

Request bodies are the models of :mod:`.actions` (their field types come from
``core/inputs.py``, shared with the CLI and the library). This module holds what comes
back: every error is :class:`ErrorBody` (``{"error": {"code", "message"}}``) whatever the
status, and each route lists the statuses it can answer with (:func:`errors`), so a client
generated from ``/openapi.json`` knows every answer it can get.

The views allow fields beyond the ones listed: a newer server may add some, and a client
must ignore what it does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="What kind of error, as a stable word: invalid_request, "
                      "not_found, budget, unsafe_url, idempotency_conflict...")
    message: str = Field(description="What was wrong and what is allowed, for people.")


class ErrorBody(BaseModel):
    """Every error answer, at every status."""

    error: ErrorDetail


STATUS = {
    400: "The request could not be read (a malformed header, or a body that is not JSON).",
    401: "No valid API key: send Authorization: Bearer <key>.",
    402: "Over a budget: the render's estimate does not fit a spending limit.",
    404: "No such render, file or delivery for this key's tenant.",
    405: "The path does not take this method.",
    409: "A conflict: the render is not in a state for this action, or a request with this "
         "Idempotency-Key is still running (retry after Retry-After seconds).",
    413: "The request body is over the server's limit.",
    416: "The Range asks for bytes the file does not have.",
    422: "Invalid input: the message names the value and says what is allowed.",
    500: "An internal error; it is logged, and nothing was changed.",
    503: "The database cannot be reached.",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    409: {"Retry-After": {"schema": {"type": "integer"},
                          "description": "Seconds to wait before retrying (Idempotency-Key)."}},
    416: {"Content-Range": {"schema": {"type": "string"},
                            "description": "bytes */SIZE: the file's size."}},
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries for these error statuses, each in the one error shape."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in (*statuses, 500):
        # JSON whatever the route's own media type (a stream, a file) is.
        entry: dict[str, Any] = {"description": STATUS[status], "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        out[status] = entry
    return out


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class TakeView(_Open):
    take: int = Field(description="The take's number (part of its shot key).")
    picked: bool = Field(description="Whether the output holds this take.")
    state: str
    cached: bool
    cost_usd: str | None = Field(description="What this take was billed (USD).")
    error: str | None
    key: str
    url: str | None = Field(description="The take's clip, once the render awaits review.")


class ShotView(_Open):
    index: int = Field(description="The shot's number, from 1.")
    state: str = Field(description="pending, submitting, rendering, downloading, done, "
                       "cached, failed...")
    progress: float | None
    cached: bool
    cost_usd: str | None = Field(description="USD as a decimal string.")
    error: str | None
    prompt: str | None
    seconds: int | None
    take: int | None
    continues: bool = Field(False, description="Whether the shot starts from the last frame "
                            "the output shows of the shot before (a continuation).")
    clip_url: str | None = Field(None, description="The shot's clip on its own, once the "
                                 "render is stitched.")
    takes: list[TakeView] = Field(default_factory=list, description="Every candidate of a "
                                  "shot rendered with several takes (empty otherwise).")


Status = Literal["queued", "planning", "rendering", "stitching", "awaiting_review", "published",
                 "rejected", "failed", "cancelled"]


class RenderView(_Open):
    """A render as every face shows it (``shotline show --json`` too)."""

    id: str
    status: Status
    model: str
    created_at: float
    updated_at: float
    estimate_usd: str | None = Field(description="What was reserved before the first call.")
    cost_usd: str | None = Field(description="What the ledger holds for this render.")
    seconds: float | None
    error: str | None
    review_note: str | None
    auto_approve: bool
    webhook_url: str | None
    output_url: str | None
    poster_url: str | None
    contact_sheet_url: str | None
    shots: list[ShotView]
    links: dict[str, str]


class RenderPage(_Open):
    data: list[RenderView]
    next_cursor: str | None = Field(description="Pass as cursor for the next page.")


class LedgerRow(_Open):
    id: int
    render_id: str | None
    shot_key: str
    provider: str
    model: str
    provider_job_id: str
    seconds_billed: int
    audio: bool
    unit_price: str
    amount: str
    outcome: str
    created_at: float


class LedgerPage(_Open):
    data: list[LedgerRow]


class SpendRow(_Open):
    """One group (its key is ``day``, ``provider`` or ``model``, as asked)."""

    spent_usd: str
    saved_usd: str
    calls: int
    seconds_billed: int


class SpendPage(_Open):
    data: list[SpendRow]


class WebhookSecret(_Open):
    webhook_secret: str


class Attempt(_Open):
    attempted_at: float
    status_code: int | None
    error: str | None
    seconds: float


class Delivery(_Open):
    id: int
    event_id: str
    type: str
    render_id: str
    endpoint_id: str | None
    url: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: float | None
    delivered_at: float | None
    created_at: float
    attempt_log: list[Attempt]


class DeliveryPage(_Open):
    data: list[Delivery]


class Replayed(_Open):
    replayed: bool


class Health(_Open):
    status: str
    database: str
    version: str
    worker: bool
