"""Inbound webhooks from vendors: verified, deduplicated, and only ever a hint.

Some vendors (Replicate, and the OpenAI ``/v1/videos`` format) can call us when a job
changes, signing the delivery in the Standard Webhooks scheme. A delivery is never taken
as the truth about a job: after its signature is checked and its id is recorded (a
redelivery of the same id is ignored), the job is polled, and the poll's answer is what
the caller acts on. A forged, stale or replayed delivery therefore cannot mark a job done.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from ..errors import PermanentError
from ..providers.base import JobRef, JobStatus, Provider
from ..store.db import Database, insert_ignoring_duplicates, vendor_events


class SignedWebhooks(Protocol):
    """An adapter whose vendor signs its webhooks."""

    name: str

    def verify_webhook(self, body: bytes, headers: Mapping[str, str], secret: str) -> str: ...


def first_delivery(db: Database, provider: str, event_id: str, job_id: str) -> bool:
    """Record a delivery id; False if that id was seen before (a redelivery)."""
    with db.write() as conn:
        return insert_ignoring_duplicates(conn, vendor_events, {
            "provider": provider, "event_id": event_id, "job_id": job_id,
            "received_at": time.time()})


async def handle(provider: Provider, db: Database, body: bytes, headers: Mapping[str, str],
                 secret: str) -> tuple[str, JobStatus] | None:
    """Verify a vendor's delivery and poll the job it names; None for a redelivery.

    Raises ``PermanentError`` for a bad signature (nothing is recorded or polled).
    """
    verify = getattr(provider, "verify_webhook", None)
    if verify is None:
        raise PermanentError(f"{provider.name} does not sign webhooks; poll it instead")
    lowered = {k.lower(): v for k, v in headers.items()}
    job_id: str = verify(body, lowered, secret)
    event_id = lowered.get("webhook-id", "")
    if not event_id or not first_delivery(db, provider.name, event_id, job_id):
        return None
    return job_id, await provider.poll(JobRef(provider.name, job_id))
