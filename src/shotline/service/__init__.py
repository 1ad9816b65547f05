"""The HTTP service and its workers: actions on renders, the queue, webhooks delivery,
tenants and keys, idempotency, the SSRF guard and metrics. Built on the engine and the
store; nothing below imports from here.
"""
