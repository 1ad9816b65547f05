"""One typed settings object: every setting has a default and a help line here.

Each field is read from the environment as ``SHOTLINE_<NAME>`` (``SHOTLINE_HOME``,
``SHOTLINE_MAX_TARGET_SECONDS``...). Vendor keys are not settings: each adapter reads
its vendor's usual variable, so secrets never pass through this object.

A bad value (``SHOTLINE_DAILY_BUDGET_USD=abc``, a NaN, an overrides file that does not
exist) raises :class:`~shotline.errors.ConfigError` naming the variable and what it
accepts: one line for the user, never a validation traceback.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from .core.inputs import ALLOWED, MAX_USD, ModelName, shown
from .errors import ConfigError


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("shotline", appauthor=False))


class Settings(BaseSettings):
    """Everything a user can configure, with the defaults an embedded install uses."""

    model_config = SettingsConfigDict(env_prefix="SHOTLINE_", extra="ignore", frozen=True,
                                      allow_inf_nan=False)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = []
            for e in exc.errors()[:3]:
                field = str(e["loc"][0]) if e["loc"] else ""
                why = ALLOWED.get(field) or str(e["msg"]).removeprefix("Value error, ")
                problems.append(f"SHOTLINE_{field.upper()}={shown(e.get('input'))}: {why}")
            raise ConfigError("bad setting " + "; ".join(problems)) from None
        except SettingsError as exc:  # a JSON setting that is not JSON
            found = re.search(r'field "(\w+)"', str(exc))
            name = f"SHOTLINE_{found.group(1).upper()}" if found else "a JSON setting"
            raise ConfigError(f"bad setting {name}: it is not valid JSON (e.g. "
                              '{"fal": 2, "runway": 1})') from None

    home: Path = Field(
        default_factory=_default_home,
        description="Where shotline keeps its database, files and the local provider's jobs.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the database (default: SQLite at HOME/shotline.db)."
    )
    model: ModelName = Field("local/preview", description="Model used when a brief names none "
                             "(PROVIDER/MODEL).")
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
    loudness: bool = Field(
        True, description="Bring every shot's sound to loudness_target (off: each clip keeps "
        "its own level; --no-loudness, or \"loudness\": false in the API, per render).",
    )
    loudness_target: float = Field(
        -16.0, ge=-60, le=-5, description="Integrated loudness (LUFS, EBU R128) of every shot."
    )
    true_peak: float = Field(
        -1.5, ge=-20, le=0, description="Peak ceiling (dBTP) once loudness is matched; louder "
        "peaks are limited.",
    )
    encode_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                           "slow", "slower", "veryslow"] = Field(
        "veryfast", description="x264 preset each clip is normalised with (slower: smaller files)."
    )
    copy_matching: bool = Field(
        True, description="Keep a clip's own video, not re-encoded, when it already is the "
        "output's size, frame rate and H.264 (off: every clip is normalised).",
    )
    normalise_concurrency: int = Field(
        2, ge=1, description="Clips normalised at once while a render runs (each is one ffmpeg)."
    )
    max_takes: int = Field(
        4, ge=1, le=8, description="The most candidates of one shot a render or a re-roll may "
        "ask for (--takes); each is billed.",
    )
    quality_reroll: bool = Field(
        False, description="Render a shot the quality gate fails (black, frozen, silent, too "
        "short) once more as a new take, automatically, if the budget allows.",
    )
    concurrency: int = Field(
        4, ge=1, description="Shots in flight at once per provider (unless set per provider)."
    )
    provider_concurrency: dict[str, Annotated[int, Field(ge=1)]] = Field(
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
        None, ge=0, le=MAX_USD,
        description="Refuse renders that would take the day's spend (UTC) past this (USD)."
    )
    monthly_budget_usd: Decimal | None = Field(
        None, ge=0, le=MAX_USD,
        description="Refuse renders that would take the month's spend past this (USD)."
    )
    overrides: Path | None = Field(
        None, description="Capability overrides file (default: HOME/overrides.toml, if it "
        "exists); a file named here must exist."
    )
    shared_cache: bool = Field(
        False, description="Share stored shots between all tenants (and the CLI): a shot one "
        "tenant paid for is free to the others, who can then tell that it was rendered. Off: "
        "each tenant has a cache of its own; the CLI's renders are one tenant."
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
    max_image_bytes: int = Field(
        10_000_000, gt=0, description="Largest image a brief may name (a cast picture, a first "
        "or last frame), in bytes."
    )
    max_images: int = Field(
        32, ge=1, description="Most distinct images one brief may name."
    )
    image_timeout: float = Field(
        30.0, gt=0, description="Seconds to wait for an image URL a brief names to be fetched."
    )

    allow_private_webhooks: bool = Field(
        False, description="Let webhooks reach private, loopback or link-local addresses, on any "
        "port. For local development and tests only.",
    )
    allow_private_images: bool = Field(
        False, description="Service: let a brief's image URLs reach private, loopback or "
        "link-local addresses, on any port. For local development and tests only.",
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

    @field_validator("overrides")
    @classmethod
    def _overrides_exist(cls, path: Path | None) -> Path | None:
        # The default file is optional; a file someone named is not: ignoring it would
        # quietly price renders with the packaged table.
        if path is not None and not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise ValueError(f"the overrides file {path} {what}: name an existing TOML file "
                             "(--overrides or SHOTLINE_OVERRIDES), or leave it unset to use "
                             "HOME/overrides.toml")
        return path

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
