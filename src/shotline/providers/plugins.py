"""Finding provider adapters through the ``shotline.providers`` entry-point group.

The built-in adapters are registered the same way a third-party package would register
one, so the core never special-cases its own providers.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from ..errors import ConfigError
from ..settings import Settings
from .base import Provider, ProviderFactory, make

GROUP = "shotline.providers"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def provider_names() -> list[str]:
    return sorted(_entry_points())


def load_provider(name: str, settings: Settings) -> Provider:
    """Instantiate the adapter registered under ``name``."""
    ep = _entry_points().get(name)
    if ep is None:
        known = ", ".join(provider_names()) or "none"
        raise ConfigError(f"no provider plugin named {name!r} is installed (installed: {known})")
    return make(ep.load(), settings)


def credentials(name: str) -> str:
    """Whether an adapter can authenticate: 'present', 'missing: VAR', 'not needed' or why not."""
    ep = _entry_points().get(name)
    if ep is None:
        return "no adapter installed"
    try:
        factory = ep.load()
    except ImportError as exc:
        return f"adapter failed to load: {exc}"
    variables: tuple[str, ...] = getattr(factory, "key_env", ())
    if not variables:
        return "not needed"
    return "present" if factory.has_credentials() else f"missing: set {' or '.join(variables)}"


def lookup(name: str) -> tuple[bool, str]:
    """Whether the adapter can find a job whose submit answer was lost, and how (or, when it
    cannot, what an operator should check): its protocol-declared ``finds_jobs``/``lookup``."""
    ep = _entry_points().get(name)
    if ep is None:
        return False, "no adapter installed"
    try:
        factory: ProviderFactory = ep.load()
    except ImportError as exc:
        return False, f"adapter failed to load: {exc}"
    return bool(factory.finds_jobs), str(factory.lookup)
