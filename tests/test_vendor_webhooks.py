from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest
import standardwebhooks

from shotline.errors import PermanentError
from shotline.providers.base import JobRef, JobStatus
from shotline.service import vendor_webhooks
from shotline.store.db import Database

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class SigningVendor:
    """A vendor adapter double: verifies like Replicate does, and counts polls."""

    name: ClassVar[str] = "acme"

    def __init__(self) -> None:
        self.polled: list[str] = []

    def verify_webhook(self, body: bytes, headers: Mapping[str, str], secret: str) -> str:
        try:
            payload = standardwebhooks.Webhook(secret).verify(body, dict(headers))
        except standardwebhooks.WebhookVerificationError as exc:
            raise PermanentError(f"bad webhook signature: {exc}") from None
        return str(payload["id"])

    async def poll(self, ref: JobRef) -> JobStatus:
        self.polled.append(ref.job_id)
        return JobStatus("running", progress=0.5)


def signed(body: bytes, msg_id: str, when: dt.datetime | None = None) -> dict[str, str]:
    when = when or dt.datetime.now(dt.UTC)
    signature = standardwebhooks.Webhook(SECRET).sign(msg_id, when, body.decode())
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(int(when.timestamp())),
            "Webhook-Signature": signature}


def test_a_delivery_is_verified_deduplicated_and_only_a_hint(tmp_path: Path) -> None:
    db, vendor = Database.for_home(tmp_path), SigningVendor()
    # The body claims the job succeeded; the poll (the truth) says it is still running.
    body = json.dumps({"id": "job-1", "status": "succeeded"}).encode()
    headers = signed(body, "msg_1")
    result = asyncio.run(vendor_webhooks.handle(vendor, db, body, headers, SECRET))  # type: ignore[arg-type]
    assert result == ("job-1", JobStatus("running", progress=0.5))
    again = asyncio.run(vendor_webhooks.handle(vendor, db, body, headers, SECRET))  # type: ignore[arg-type]
    assert again is None and vendor.polled == ["job-1"]


@pytest.mark.parametrize("tamper", ["body", "stale"])
def test_forged_or_stale_deliveries_are_refused_before_any_poll(tmp_path: Path, tamper: str) -> None:
    db, vendor = Database.for_home(tmp_path), SigningVendor()
    body = json.dumps({"id": "job-1"}).encode()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    headers = signed(body, "msg_2", old if tamper == "stale" else None)
    sent = body.replace(b"job-1", b"job-9") if tamper == "body" else body
    with pytest.raises(PermanentError, match="signature"):
        asyncio.run(vendor_webhooks.handle(vendor, db, sent, headers, SECRET))  # type: ignore[arg-type]
    assert vendor.polled == []
    assert vendor_webhooks.first_delivery(db, "acme", "msg_2", "job-1") is True  # nothing recorded
