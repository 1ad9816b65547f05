"""The provider protocol, split into phases so a job can resume after a crash.

A render calls ``submit`` once, persists the returned :class:`JobRef`, then ``poll``s it
until it is done and ``download``s the file. Everything between those calls is plain
JSON-serialisable data, so a restarted worker can pick up a ``JobRef`` from the database
and carry on polling instead of paying for a second submit.

An adapter only maps a shot to the vendor's request, performs these calls and classifies
errors (``RetryableError``, ``PermanentError``, ``AmbiguousSubmitError``). Retries,
caching, pricing, budgets and stitching belong to the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..settings import Settings

JobState = Literal["queued", "running", "succeeded", "failed"]


@dataclass(frozen=True)
class ShotRequest:
    """Everything one provider call needs; ``key`` is the shot's content key."""

    model: str
    wire_model: str
    prompt: str
    seconds: int
    size: str
    fps: int
    audio: bool
    seed: int | None
    take: int
    key: str
    index: int = 0
    first_frame: Path | None = None
    last_frame: Path | None = None


@dataclass(frozen=True)
class JobRef:
    """A vendor job handle; ``data`` holds whatever else the vendor returned (URLs)."""

    provider: str
    job_id: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "job_id": self.job_id, "data": self.data}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> JobRef:
        return cls(raw["provider"], raw["job_id"], dict(raw.get("data") or {}))


@dataclass(frozen=True)
class JobStatus:
    """One poll's answer. ``next_poll`` is the vendor's hint in seconds, if it gave one."""

    state: JobState
    progress: float | None = None
    next_poll: float | None = None
    error: str | None = None
    retryable: bool = False
    billed_seconds: float | None = None


@runtime_checkable
class Provider(Protocol):
    """What every adapter implements. Constructed with the settings, used async."""

    name: ClassVar[str]

    async def submit(self, request: ShotRequest) -> JobRef: ...

    async def poll(self, ref: JobRef) -> JobStatus: ...

    async def download(self, ref: JobRef, dest: Path) -> Path: ...

    async def cancel(self, ref: JobRef) -> bool: ...

    async def aclose(self) -> None: ...


ProviderFactory = type[Provider]


def make(factory: Any, settings: Settings) -> Provider:
    provider = factory(settings)
    if not isinstance(provider, Provider):
        raise TypeError(f"{factory!r} does not implement the shotline provider protocol")
    return provider
