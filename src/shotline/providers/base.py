"""The provider protocol, split into phases so a job can resume after a crash.

A render calls ``submit`` once, persists the returned :class:`JobRef`, then ``poll``s it
until it is done and ``download``s the file. Everything between those calls is plain
JSON-serialisable data, so a restarted worker can pick up a ``JobRef`` from the database
and carry on polling instead of paying for a second submit.

An adapter only maps a shot to the vendor's request, performs these calls and classifies
errors (``RetryableError``, ``PermanentError``, ``AmbiguousSubmitError``). Retries,
caching, pricing, budgets and stitching belong to the core.

Two abilities are optional, and declared here rather than discovered with ``getattr``:

* ``finds_jobs`` says whether ``find`` can look up a job whose submit answer was lost (a
  timeout after the POST was sent, or a process killed mid-submit). ``lookup`` says, for
  ``shotline providers`` and for the ambiguous-submit message, how it looks or, when it
  cannot, what an operator should check. An adapter without a lookup keeps the default
  ``find``, which is never called.
* ``preflight`` refuses, before anything is written, a request that would fail anyway
  (a missing key, something the model cannot do); the default accepts everything.

:class:`BaseProvider` carries the defaults, for adapters to inherit.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from ..errors import AmbiguousSubmitError, CapabilityError, MediaError

if TYPE_CHECKING:
    from ..settings import Settings

JobState = Literal["queued", "running", "succeeded", "failed"]


@dataclass(frozen=True)
class ImageInput:
    """One input image as a vendor receives it: its bytes and what they are.

    ``sha256`` (``sha256:<hex>``) is the hash of ``data``, the value the shot key covers;
    it is checked when the image is built, so what is sent is what was keyed. ``name`` is
    the cast member a reference image shows (empty for a frame).
    """

    sha256: str
    data: bytes = field(repr=False)
    mime: str
    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        if "sha256:" + hashlib.sha256(self.data).hexdigest() != self.sha256:
            raise MediaError(f"input image {self.sha256} does not hash to its name: the stored "
                             "copy is damaged; render the brief again to read it anew")

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    def data_uri(self) -> str:
        """The image inlined as a ``data:`` URI, for vendors that take one in a URL field."""
        return f"data:{self.mime};base64,{self.base64()}"

    def require(self, where: str, *, mimes: tuple[str, ...] = (), min_side: int = 0,
                ratio: tuple[float, float] | None = None, max_bytes: int | None = None) -> None:
        """Refuse an image the vendor documents it would refuse (a 4xx some vendors bill)."""
        problems = []
        if mimes and self.mime not in mimes:
            problems.append(f"{self.mime} (takes {', '.join(mimes)})")
        if min(self.width, self.height) < min_side:
            problems.append(f"{self.width}x{self.height} px (sides of at least {min_side} px)")
        if ratio and not ratio[0] <= self.width / self.height <= ratio[1]:
            problems.append(f"a {self.width}:{self.height} shape (width/height within "
                            f"{ratio[0]:g}..{ratio[1]:g})")
        if max_bytes is not None and len(self.data) > max_bytes:
            problems.append(f"{len(self.data)} bytes (at most {max_bytes})")
        if problems:
            who = f"{self.name}'s reference image" if self.name else "an input image"
            raise CapabilityError(f"{where}: {who} ({self.sha256[:19]}...) is "
                                  f"{'; '.join(problems)}; nothing was sent")


@dataclass(frozen=True)
class ShotRequest:
    """Everything one provider call needs; ``key`` is the shot's content key.

    ``first_frame`` and ``last_frame`` are images the clip starts from and ends on (a
    continuation fills ``first_frame`` with the previous clip's last frame);
    ``references`` are the cast's pictures, and ``cast`` the names of the members the shot
    shows (their descriptions are already in ``prompt``).
    """

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
    first_frame: ImageInput | None = None
    last_frame: ImageInput | None = None
    references: tuple[ImageInput, ...] = ()
    cast: tuple[str, ...] = ()
    # A take not picked (core/takes.py) is made in a slot of its own (``index``); ``shot``
    # is then the index of the shot it is a take of.
    shot: int | None = None

    @property
    def number(self) -> int:
        """The shot's number as people see it (from 1), for a take not picked too."""
        return (self.index if self.shot is None else self.shot) + 1

    def images(self) -> list[ImageInput]:
        """Every input image of the call: frames first, then references."""
        return [i for i in (self.first_frame, self.last_frame) if i] + list(self.references)


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
    finds_jobs: ClassVar[bool]
    lookup: ClassVar[str]

    async def submit(self, request: ShotRequest) -> JobRef: ...

    async def poll(self, ref: JobRef) -> JobStatus: ...

    async def download(self, ref: JobRef, dest: Path) -> Path: ...

    async def cancel(self, ref: JobRef) -> bool: ...

    async def aclose(self) -> None: ...

    async def find(self, request: ShotRequest, since: float) -> JobRef | None:
        """The job ``request`` made, created at or after ``since`` (Unix seconds, our
        clock), if the vendor has one; None if it has none, so submitting is safe.

        Raise ``AmbiguousSubmitError`` when the vendor cannot tell (the core then leaves
        the shot to an operator), never guess. Only called when ``finds_jobs`` is true.
        """
        ...

    def preflight(self, request: ShotRequest) -> None:
        """Raise (ConfigError, CapabilityError) for a request that cannot be sent; no I/O."""
        ...


class BaseProvider:
    """The defaults of the optional abilities: no lookup, no preflight checks."""

    finds_jobs: ClassVar[bool] = False
    lookup: ClassVar[str] = ("this vendor cannot look a job up by its request: check its "
                             "dashboard for a job made from the shot's prompt")

    async def find(self, request: ShotRequest, since: float) -> JobRef | None:
        raise AmbiguousSubmitError(f"no lookup: {self.lookup}", reason="no lookup")

    def preflight(self, request: ShotRequest) -> None:
        return None


ProviderFactory = type[Provider]


def make(factory: Any, settings: Settings) -> Provider:
    provider = factory(settings)
    if not isinstance(provider, Provider):
        raise TypeError(f"{factory!r} does not implement the shotline provider protocol")
    return provider
