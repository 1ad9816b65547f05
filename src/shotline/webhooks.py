"""Outbound webhooks (Standard Webhooks v1): signing, the outbox, delivery with retries."""

from __future__ import annotations

import base64
import secrets


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
