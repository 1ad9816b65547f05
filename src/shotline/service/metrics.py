"""Prometheus metrics, read from the database at scrape time.

The numbers come from the tables rather than from in-process counters, so every API
process reports the same totals, including the work of workers in other processes and
of earlier runs. None of them is per tenant: a scrape shows the operator's view.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..store.db import Database, ledger, render_shots, renders, savings, webhook_deliveries


class DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.read() as conn:
            by_status = conn.execute(sa.select(renders.c.status, sa.func.count())
                                     .group_by(renders.c.status)).all()
            by_state = conn.execute(sa.select(render_shots.c.state, sa.func.count())
                                    .group_by(render_shots.c.state)).all()
            calls = conn.execute(sa.select(ledger.c.provider, ledger.c.outcome, sa.func.count(),
                                           sa.func.sum(ledger.c.amount))
                                 .group_by(ledger.c.provider, ledger.c.outcome)).all()
            hits = conn.execute(sa.select(sa.func.count(), sa.func.sum(savings.c.amount))).one()
            hooks = conn.execute(sa.select(webhook_deliveries.c.state, sa.func.count())
                                 .group_by(webhook_deliveries.c.state)).all()
        renders_g = GaugeMetricFamily("shotline_renders", "Renders by state.", labels=["state"])
        for status, n in by_status:
            renders_g.add_metric([status], n)
        yield renders_g
        shots_g = GaugeMetricFamily("shotline_shots", "Shots of all renders by state.",
                                    labels=["state"])
        for state, n in by_state:
            shots_g.add_metric([state], n)
        yield shots_g
        calls_c = CounterMetricFamily("shotline_provider_calls", "Billed provider attempts.",
                                      labels=["provider", "outcome"])
        spend_c = CounterMetricFamily("shotline_spend_usd", "USD in the ledger.",
                                      labels=["provider"])
        spent: dict[str, float] = {}
        for provider, outcome, n, amount in calls:
            calls_c.add_metric([provider, outcome], n)
            spent[provider] = spent.get(provider, 0.0) + float(amount or 0)
        for provider, amount in spent.items():
            spend_c.add_metric([provider], amount)
        yield calls_c
        yield spend_c
        yield CounterMetricFamily("shotline_cache_hits", "Shots served from the store.",
                                  value=hits[0])
        yield CounterMetricFamily("shotline_cache_saved_usd",
                                  "What the shots served from the store would have cost.",
                                  value=float(hits[1] or 0))
        hooks_g = GaugeMetricFamily("shotline_webhook_deliveries", "Webhook deliveries by state.",
                                    labels=["state"])
        for state, n in hooks:
            hooks_g.add_metric([state], n)
        yield hooks_g


def registry(db: Database) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(db))
    return reg


def render(reg: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(reg), CONTENT_TYPE_LATEST
