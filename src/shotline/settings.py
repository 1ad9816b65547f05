"""One typed settings object: every setting has a default and a help line here.

Each field is read from the environment as ``SHOTLINE_<NAME>`` (``SHOTLINE_HOME``,
``SHOTLINE_MAX_TARGET_SECONDS``...). Vendor keys are not settings: each adapter reads
its vendor's usual variable, so secrets never pass through this object.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("shotline", appauthor=False))


class Settings(BaseSettings):
    """Everything a user can configure, with the defaults an embedded install uses."""

    model_config = SettingsConfigDict(env_prefix="SHOTLINE_", extra="ignore", frozen=True)

    home: Path = Field(
        default_factory=_default_home,
        description="Where shotline keeps its database, files and the local provider's jobs.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the database (default: SQLite at HOME/shotline.db)."
    )
    model: str = Field("local/preview", description="Model used when a brief names none.")
    default_shot_seconds: int = Field(
        5, ge=1, description="Shortest shot when no target is given and a shot's length comes "
        "from its words (2.5 words or 4 CJK characters a second)."
    )
    max_target_seconds: float = Field(
        600, gt=0, description="Refuse briefs whose target is longer than this many seconds."
    )
    fit: Literal["letterbox", "crop"] = Field(
        "letterbox", description="How a clip of another shape is fitted to the output size."
    )
    concurrency: int = Field(
        4, ge=1, description="Shots in flight at once per provider (unless set per provider)."
    )
    provider_concurrency: dict[str, int] = Field(
        default_factory=dict,
        description='Per-provider limits as JSON, e.g. {"fal": 2, "runway": 1}.',
    )
    render_deadline: float = Field(
        1800, gt=0, description="Give up on one shot after this many seconds (submit to file)."
    )
    max_attempts: int = Field(
        4, ge=1, description="Tries per shot for transient errors before the render fails."
    )
    backoff_base: float = Field(
        1.0, ge=0, description="First retry delay in seconds; doubles each try, with jitter."
    )
    provider_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for a vendor's HTTP answer before giving up."
    )
    poll_interval: float = Field(
        5.0, gt=0, description="Poll period when the provider gives no hint (seconds)."
    )
    daily_budget_usd: Decimal | None = Field(
        None, ge=0, description="Refuse renders that would take the day's spend (UTC) past this."
    )
    monthly_budget_usd: Decimal | None = Field(
        None, ge=0, description="Refuse renders that would take the month's spend past this."
    )
    overrides: Path | None = Field(
        None, description="Capability overrides file (default: HOME/overrides.toml)."
    )
    local_latency: float = Field(
        0.0, ge=0, description="Local provider: seconds each job takes before it is done."
    )
    local_faults: str = Field(
        "", description="Local provider: scripted faults, see docs (e.g. 'shot1:429,shot2:fail')."
    )
    local_journal: Path | None = Field(
        None, description="Local provider: JSON-lines journal of submits (default: "
        "LOCAL_DIR/journal.jsonl)."
    )
    local_dir: Path | None = Field(
        None, description="Local provider: where its jobs live (default: HOME/local). Point "
        "several workers at one shared directory to use it as one remote vendor."
    )

    allow_private_webhooks: bool = Field(
        False, description="Let webhooks reach private, loopback or link-local addresses, on any "
        "port. For local development and tests only.",
    )
    webhook_timeout: float = Field(
        15.0, gt=0, description="Seconds to wait for a webhook receiver's answer."
    )
    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Largest HTTP request body the service accepts (bytes)."
    )
    public_url: str = Field(
        "", description="Base URL the service is reached at, for links in webhooks "
        "(default: links are relative).",
    )
    worker_renders: int = Field(
        2, ge=1, description="Renders one worker process runs at once."
    )
    lease_seconds: float = Field(
        60.0, gt=0, description="A worker's claim on a render lapses this long after its last "
        "heartbeat, so another worker can resume it.",
    )

    # --- scale-out: the task queue and object storage (docs/deploy.md) ---------------------
    queue: Literal["inline", "celery"] = Field(
        "inline", description="inline: `shotline serve` renders in its own process. celery: "
        "serve only queues; `shotline worker` processes render (needs BROKER_URL).",
    )
    broker_url: str | None = Field(
        None, description="Celery broker for QUEUE=celery, e.g. redis://redis:6379/0."
    )
    broker_prefix: str = Field(
        "", description="Prefix of every key the queue writes in Redis, to share one Redis "
        "database between deployments.",
    )
    visibility_timeout: float = Field(
        3600, gt=0, description="Seconds before Redis hands a task a dead worker took to "
        "another worker; must exceed the longest task (a stitch, a download) and poll delay.",
    )
    storage: str = Field(
        "", description="Where clips and outputs are kept: empty for HOME/store, or "
        "s3://BUCKET/PREFIX for any S3-compatible store (AWS_* variables for credentials).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store other than AWS S3 (MinIO, R2, "
        "Ceph...), e.g. http://minio:9000.",
    )
    media_redirect: bool = Field(
        False, description="With S3 storage, answer media requests with a redirect to a "
        "presigned URL instead of streaming the bytes through the API.",
    )
    media_url_seconds: int = Field(
        3600, ge=60, le=604800, description="How long a presigned media URL stays valid."
    )

    @property
    def overrides_path(self) -> Path:
        return self.overrides or self.home / "overrides.toml"

    @property
    def local_root(self) -> Path:
        return self.local_dir or self.home / "local"

    @property
    def journal_path(self) -> Path:
        return self.local_journal or self.local_root / "journal.jsonl"

    @property
    def scratch(self) -> Path:
        """A worker's own disk: temporary files and copies, never the only copy of anything."""
        return self.home / "scratch"

    def limit_for(self, provider: str) -> int:
        return self.provider_concurrency.get(provider, self.concurrency)
