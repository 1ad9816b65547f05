"""The package's layers, as DESIGN.md draws them: arrows only point down.

core (pure) <- store <- engine <- service; providers sit beside the engine and below it.
The test reads every module's imports (static, so lazy imports inside functions count too)
and fails on an arrow pointing the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "shotline"

# What each layer may not import, by the first part of the module name under shotline.
FORBIDDEN = {
    "core": {"store", "engine", "service", "providers", "cli", "api", "display"},
    "store": {"engine", "service", "providers", "cli", "api", "display"},
    "engine": {"service", "cli", "api", "display"},
    "providers": {"service", "store", "cli", "api", "display"},
}
# The pure core does no I/O: none of these libraries may appear in it.
CORE_NO_IO = {"sqlalchemy", "httpx", "av", "boto3", "celery", "redis", "subprocess", "socket",
              "imageio_ffmpeg", "fastapi", "uvicorn"}


def _imports(path: Path) -> set[str]:
    """Absolute names of shotline modules (and of outside libraries) that ``path`` imports."""
    package = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def _layer_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "shotline" and len(parts) > 1 else None


def test_arrows_point_down() -> None:
    wrong = []
    for layer, banned in FORBIDDEN.items():
        for path in sorted((PKG / layer).rglob("*.py")):
            for name in _imports(path):
                if _layer_of(name) in banned:
                    wrong.append(f"{path.relative_to(PKG)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_core_does_no_io() -> None:
    wrong = [f"{path.relative_to(PKG)} imports {name}"
             for path in sorted((PKG / "core").rglob("*.py"))
             for name in _imports(path) if name.split(".")[0] in CORE_NO_IO]
    assert not wrong, "\n".join(wrong)
