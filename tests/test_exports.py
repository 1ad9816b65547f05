from __future__ import annotations

import subprocess
import sys

import shotline


def test_public_api_is_sorted_and_complete() -> None:
    assert shotline.__all__ == sorted(shotline.__all__)
    classes = {n for n, v in vars(shotline).items() if not n.startswith("_") and isinstance(v, type)}
    assert classes <= set(shotline.__all__)
    assert all(hasattr(shotline, n) for n in shotline.__all__)


def test_render_is_the_function_not_the_module() -> None:
    import shotline.engine.renderer  # the module must not shadow the function

    assert callable(shotline.render) and callable(shotline.arender)
    assert shotline.render.__module__ == "shotline.api"


def test_importing_the_package_loads_no_codec() -> None:
    """`import shotline` (and so every CLI command) starts without PyAV or the renderer."""
    code = ("import sys, shotline; "
            "assert 'av' not in sys.modules and 'shotline.engine.renderer' not in sys.modules; "
            "shotline.RenderFailed; assert 'av' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
