"""Per-model capabilities and prices, as data.

The packaged table (``data/models.toml``) says, for every ``provider/model``, what one
call accepts and what it costs. Vendors move faster than releases, so a user file
(``$SHOTLINE_HOME/overrides.toml`` or ``--overrides FILE``) can change any field or add
a model. Invariants:

* every override carries a ``reason`` and an ``expires`` date, or the file is refused;
* an override past its date still applies, but warns on every use
  (:class:`OverrideExpiredWarning`), because silently dropping it could change a price;
* a ``sunset`` model is listed but refuses new work, naming the date and a replacement;
* every price names its source and the date it was read (``price_date``);
* a model may name a ``gateway``: an OpenAI-compatible endpoint declared under
  ``[gateways.NAME]`` (a base URL and the environment variable holding its key, never the
  key itself); a model naming an undeclared gateway refuses the whole table.

Nothing here does I/O except reading the two TOML files in :func:`load_table` (and a
``stat`` of the overrides file in :func:`table_for`, which keeps one parsed table per
process until that file changes).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import CapabilityError, OverrideError

AudioMode = Literal["optional", "always", "none"]
ImageInput = Literal["first_frame", "last_frame", "reference"]
# How reference images combine with frames: freely, only without a first or last frame
# (Veo, Seedance), or only together with a first frame (Kling 3.0's elements on fal).
ReferenceMode = Literal["any", "alone", "with_first_frame"]
PriceSource = Literal["vendor", "third_party", "inferred", "simulated"]
MAX_PRICE = Decimal(1000)  # USD per second (or audio multiplier): far above any vendor's


class OverrideExpiredWarning(UserWarning):
    """A capability override is past its ``expires`` date and should be reviewed."""


class Override(BaseModel):
    """Why and until when a table entry was changed by the user."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str = Field(min_length=1)
    expires: dt.date
    source: str
    fields: tuple[str, ...]


class Gateway(BaseModel):
    """An OpenAI-compatible ``/v1/videos`` endpoint (LiteLLM's proxy, a reseller, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    base_url: str = Field(pattern=r"^https?://[^/\s]+(/\S*)?$",
                          description="the gateway's URL without the /v1/videos path")
    key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="environment variable that holds its API key; "
                                "none for a gateway that takes no key")
    reason: str = ""

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/")


class Capabilities(BaseModel):
    """What one model accepts per call, and what it bills."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="provider/model, the name users type")
    wire_model: str = Field(description="the model id the vendor expects on the wire")
    durations: tuple[int, ...] = Field(description="every whole number of seconds one call accepts")
    max_seconds: int
    sizes: tuple[str, ...] = Field(description="output sizes as WxH")
    default_size: str
    fps: tuple[int, ...]
    default_fps: int
    audio: AudioMode
    audio_multiplier: Decimal = Decimal(1)
    image_inputs: tuple[ImageInput, ...] = Field(
        (), description="what one call takes besides the prompt, as shotline sends it: a "
        "first frame (image-to-video), a last frame, reference images")
    max_references: int = Field(0, ge=0, description="reference images one call takes (0: "
                                "none; cast members then go by their description only)")
    reference_mode: ReferenceMode = "any"
    reference_durations: tuple[int, ...] = Field(
        (), description="call durations that may carry references (empty: any)")
    seed: bool = False
    prices: dict[str, Decimal] = Field(
        description="USD per billed second by resolution tier ('720p', ...); '*' is any tier. "
        "For audio='always' models this is the price with audio."
    )
    billing_block: int = Field(1, description="the vendor bills in blocks of this many seconds")
    billed_on_failure: bool = False
    price_source: PriceSource = "vendor"
    price_date: dt.date | None = Field(None, description="when the price was read at its "
                                       "source (required in the packaged table)")
    price_ref: str = Field("", description="where the price was read (a page, an SDK, a "
                           "reseller), or how it was inferred")
    gateway: str | None = Field(None, description="openai models: the [gateways] entry that "
                                "serves it; none is OpenAI's own API")
    status: Literal["active", "sunset"] = "active"
    sunset_date: dt.date | None = None
    replacement: str | None = None
    notes: str = ""
    override: Override | None = None

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.model.split("/", 1)[1]

    @property
    def min_seconds(self) -> int:
        return self.durations[0]

    @model_validator(mode="after")
    def _consistent(self) -> Capabilities:
        if "/" not in self.model:
            raise ValueError(f"model name {self.model!r} must be provider/model")
        if not self.durations or list(self.durations) != sorted(set(self.durations)):
            raise ValueError("durations must be a non-empty, sorted list of distinct seconds")
        if self.durations[0] < 1 or self.durations[-1] > self.max_seconds:
            raise ValueError(f"durations must lie in 1..max_seconds ({self.max_seconds})")
        for size in self.sizes:
            parse_size(size)
            if tier_of(size) not in self.prices and "*" not in self.prices:
                raise ValueError(f"no price for size {size} (tier {tier_of(size)})")
        if self.default_size not in self.sizes:
            raise ValueError(f"default_size {self.default_size} is not one of sizes")
        if self.default_fps not in self.fps:
            raise ValueError(f"default_fps {self.default_fps} is not one of fps")
        if self.status == "sunset" and self.sunset_date is None:
            raise ValueError("a sunset model needs sunset_date")
        if self.gateway is not None and self.provider != "openai":
            raise ValueError("only openai/... models go through a gateway")
        if ("reference" in self.image_inputs) != (self.max_references > 0):
            raise ValueError("a model that takes 'reference' images needs max_references >= 1, "
                             "and max_references needs 'reference' in image_inputs")
        if not set(self.reference_durations) <= set(self.durations):
            raise ValueError("reference_durations must be among durations")
        self._check_prices()
        if not all(1 <= f <= 120 for f in self.fps) or self.billing_block < 1:
            raise ValueError("fps must lie in 1..120 and billing_block be 1 or more")
        return self

    def _check_prices(self) -> None:
        # A price is what a second costs: never negative (an estimate of -$10 would let a
        # render past any budget), never NaN or infinite.
        for tier, price in {**self.prices, "audio_multiplier": self.audio_multiplier}.items():
            if not price.is_finite() or not 0 <= price <= MAX_PRICE:
                raise ValueError(f"price {tier} = {price} must be a finite number from 0 to "
                                 f"{MAX_PRICE}")

    def takes(self, kind: ImageInput) -> bool:
        return kind in self.image_inputs

    def price_per_second(self, size: str) -> Decimal:
        return self.prices.get(tier_of(size), self.prices.get("*", Decimal(0)))

    def require_active(self) -> None:
        """Refuse new work on a retired model, saying when and what to use instead."""
        if self.status != "sunset":
            return
        instead = f" Use {self.replacement} instead." if self.replacement else ""
        raise CapabilityError(
            f"{self.model} was shut down on {self.sunset_date} and takes no new work.{instead}"
        )

    def nearest_duration(self, seconds: float) -> int | None:
        """The shortest allowed duration that covers ``seconds``, or None past the cap."""
        for d in self.durations:
            if d + 1e-9 >= seconds:
                return d
        return None


def parse_size(size: str) -> tuple[int, int]:
    """``'1280x720'`` -> ``(1280, 720)``; even, positive dimensions only."""
    try:
        w_s, h_s = size.lower().split("x")
        w, h = int(w_s), int(h_s)
    except ValueError:
        raise CapabilityError(f"size {size!r} is not WxH, e.g. 1280x720") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2 or w > 7680 or h > 7680:
        raise CapabilityError(f"size {size!r}: width and height must be even, 2..7680")
    return w, h


def tier_of(size: str) -> str:
    """Resolution tier by the short side: 1280x720 and 720x1280 are both '720p'."""
    w, h = parse_size(size)
    short = min(w, h)
    return "4k" if short >= 2160 else f"{short}p"


PREVIEW_MODEL = "local/preview"


class ModelTable:
    """The packaged table merged with the user's overrides, and the declared gateways."""

    def __init__(self, entries: Mapping[str, Capabilities],
                 gateways: Mapping[str, Gateway] | None = None) -> None:
        self._entries = dict(sorted(entries.items()))
        self.gateways: dict[str, Gateway] = dict(gateways or {})

    def __iter__(self) -> Iterator[Capabilities]:
        return iter(self._entries.values())

    def __contains__(self, model: object) -> bool:
        return model in self._entries

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, model: str, *, today: dt.date | None = None) -> Capabilities:
        """The capabilities of ``model``, warning if an expired override shapes them."""
        caps = self._entries.get(model)
        if caps is None:
            close = [n for n in self._entries if model.split("/")[-1] in n][:5]
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise CapabilityError(
                f"unknown model {model!r}; `shotline providers` lists the {len(self._entries)} "
                f"known models.{hint}"
            )
        warn_if_expired(caps, today or dt.date.today())
        return caps

    def drawing(self, caps: Capabilities, *, preview: bool) -> Capabilities:
        """The model that draws the shots planned for ``caps``: the free local renderer
        for a preview (same cuts, no cost), else ``caps`` itself."""
        return self.get(PREVIEW_MODEL) if preview else caps


def warn_if_expired(caps: Capabilities, today: dt.date) -> None:
    if caps.override and caps.override.expires < today:
        warnings.warn(
            f"the override of {caps.model} ({', '.join(caps.override.fields)}) from "
            f"{caps.override.source} expired on {caps.override.expires}: "
            f"reason given: {caps.override.reason!r}. Check the vendor and renew or remove it.",
            OverrideExpiredWarning,
            stacklevel=3,
        )


def _expand(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Turn the table's compact TOML form into Capabilities fields."""
    entry = dict(raw)
    if "duration_range" in entry:
        lo, hi = entry.pop("duration_range")
        entry["durations"] = list(range(int(lo), int(hi) + 1))
    if "prices" in entry:
        entry["prices"] = {k: Decimal(str(v)) for k, v in entry["prices"].items()}
    if "audio_multiplier" in entry:
        entry["audio_multiplier"] = Decimal(str(entry["audio_multiplier"]))
    entry.setdefault("default_size", (entry.get("sizes") or [""])[0])
    entry.setdefault("default_fps", (entry.get("fps") or [0])[0])
    return entry


def _read_toml(path: Path | None, text: str | None = None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``[models]`` and ``[gateways]`` tables of one file."""
    try:
        data = tomllib.loads(text if text is not None else Path(path or "").read_text("utf-8"))
    except UnicodeDecodeError as exc:
        raise OverrideError(f"cannot read {path}: it is not UTF-8 text (byte offset {exc.start}); "
                            "an overrides file is TOML") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise OverrideError(f"cannot read {path}: {exc}") from None
    models, gateways = data.get("models", {}), data.get("gateways", {})
    if not isinstance(models, dict):
        raise OverrideError(f"{path}: expected [models.\"provider/model\"] tables")
    if not isinstance(gateways, dict) or not all(isinstance(g, dict) for g in gateways.values()):
        raise OverrideError(f"{path}: expected [gateways.NAME] tables with base_url and key_env")
    return models, gateways


def _gateways(raw: Mapping[str, Any], source: str) -> dict[str, Gateway]:
    found = {}
    for name, entry in raw.items():
        try:
            found[name] = Gateway.model_validate({**entry, "name": name})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}"
                                 for e in exc.errors())
            raise OverrideError(f"{source}: gateway {name!r}: {problems}") from None
    return found


def _apply_override(
    base: dict[str, Any] | None, name: str, raw: Mapping[str, Any], source: str
) -> dict[str, Any]:
    fields = {k: v for k, v in raw.items() if k not in ("reason", "expires")}
    reason, expires = raw.get("reason"), raw.get("expires")
    if not isinstance(reason, str) or not reason.strip():
        raise OverrideError(
            f"{source}: the override of {name} has no reason; every override needs "
            "reason = \"why the table is wrong\" and expires = YYYY-MM-DD"
        )
    if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
        raise OverrideError(
            f"{source}: the override of {name} needs expires = YYYY-MM-DD (a TOML date), "
            f"got {expires!r}"
        )
    merged = dict(base or {"model": name, "wire_model": name.split("/", 1)[-1]})
    if "duration_range" in fields or "durations" in fields:
        merged.pop("duration_range", None)
        merged.pop("durations", None)
    if base and "sizes" in fields and "default_size" not in fields:
        merged.pop("default_size", None)
    if base and "fps" in fields and "default_fps" not in fields:
        merged.pop("default_fps", None)
    if "prices" in fields and "price_ref" not in fields:  # the packaged source no longer holds
        merged["price_ref"] = f"override: {reason.strip()}"
        merged["price_date"] = fields.get("price_date")
    merged.update(fields)
    merged["override"] = Override(
        reason=reason.strip(), expires=expires, source=source, fields=tuple(sorted(fields))
    )
    return merged


def load_table(overrides: str | os.PathLike[str] | None = None, *,
               packaged: str | None = None) -> ModelTable:
    """Read the packaged table and apply an overrides file (a path) if it exists."""
    overrides = None if overrides is None else Path(overrides)
    text = packaged or resources.files("shotline").joinpath("data/models.toml").read_text("utf-8")
    packaged_models, packaged_gateways = _read_toml(None, text)
    raw = {name: dict(entry, model=name) for name, entry in packaged_models.items()}
    gateways = _gateways(packaged_gateways, "packaged table")
    if overrides is not None and overrides.exists():
        user_models, user_gateways = _read_toml(overrides)
        gateways |= _gateways(user_gateways, str(overrides))
        for name, entry in user_models.items():
            if not isinstance(entry, dict):
                raise OverrideError(f"{overrides}: [models.{name!r}] must be a table")
            raw[name] = _apply_override(raw.get(name), name, entry, str(overrides))
    entries: dict[str, Capabilities] = {}
    for name, entry in raw.items():
        where = "override" if "override" in entry else "packaged table"
        try:
            entries[name] = Capabilities.model_validate(_expand(entry))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise OverrideError(f"{where} entry {name}: {problems}") from None
        except (ArithmeticError, AttributeError, TypeError, ValueError) as exc:  # e.g. prices = "x"
            raise OverrideError(f"{where} entry {name}: {type(exc).__name__}: {exc}; prices are "
                                "numbers of USD per second") from None
        caps = entries[name]
        if caps.override is None and caps.price_source != "simulated" and not (
                caps.price_date and caps.price_ref.strip()):
            raise OverrideError(f"packaged table entry {name}: every price needs price_ref "
                                "(where it was read) and price_date (when)")
        gateway = caps.gateway
        if gateway is not None and gateway not in gateways:
            known = ", ".join(sorted(gateways)) or "none declared"
            raise OverrideError(f"entry {name}: gateway {gateway!r} is not declared under "
                                f"[gateways] (declared: {known})")
    return ModelTable(entries, gateways)


_TableStamp = tuple[Path | None, tuple[int, int] | None]
_cached: tuple[_TableStamp, ModelTable] | None = None
_cache_lock = threading.Lock()


def _stamp(overrides: Path | None) -> _TableStamp:
    if overrides is None:
        return None, None
    try:  # the size too: two edits can fall in one tick of the file system's clock
        info = overrides.stat()
    except FileNotFoundError:
        return overrides, None
    return overrides, (info.st_mtime_ns, info.st_size)


def table_for(overrides: Path | None = None) -> ModelTable:
    """The model table for ``overrides``, parsed once and kept until that file changes.

    Parsing the table costs about 20 ms, far too much for every validate or request body
    an adapter builds inside the event loop; a stat is cheap. An edited, added or removed
    overrides file applies to the next call. Expired overrides still warn on every use
    (in :meth:`ModelTable.get`), cached or not.
    """
    global _cached
    stamp = _stamp(overrides)
    cached = _cached
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _cache_lock:  # one parse when several threads miss at once
        if _cached is None or _cached[0] != stamp:
            _cached = (stamp, load_table(overrides))
        return _cached[1]
