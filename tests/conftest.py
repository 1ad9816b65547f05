from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SHOTLINE_HOME, so no test sees another's state."""
    home = tmp_path / "home"
    monkeypatch.setenv("SHOTLINE_HOME", str(home))
    for var in ("SHOTLINE_LOCAL_FAULTS", "SHOTLINE_LOCAL_LATENCY", "SHOTLINE_MODEL"):
        monkeypatch.delenv(var, raising=False)
    return home


def example(name: str) -> Path:
    """An example brief shipped with the project."""
    return EXAMPLES / name
