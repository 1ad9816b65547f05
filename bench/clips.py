"""Vendor-like clips the benches share: a moving picture and a tone over pink noise."""

from __future__ import annotations

import subprocess
from pathlib import Path

from shotline.engine import media


def tone_and_noise(rate: int, seconds: float) -> str:
    """Vendor-like sound: a tone over pink noise (AAC's cost depends on the signal, and a pure
    tone alone is an unusually slow case for its fast coder)."""
    return (f"anoisesrc=c=pink:r={rate}:a=0.05:d={seconds}[n];sine=f=330:r={rate}:d={seconds}[t];"
            "[n][t]amix=inputs=2[out0]")


def vendor_clip(path: Path, seconds: float, size: str, *, fps: int = 24,
                preset: str = "ultrafast", rate: int = 48000) -> Path:
    """An x264 (CRF 23, ``preset``) + AAC (``rate``) clip; clips made with the same arguments
    share their codec parameters."""
    subprocess.run([
        media.ffmpeg_exe(), "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds},scroll=h=0.003",
        "-f", "lavfi", "-i", tone_and_noise(rate, seconds), "-ac", "2",
        "-c:v", "libx264", "-preset", preset, "-crf", "23", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(path)],
        check=True, capture_output=True)
    return path
