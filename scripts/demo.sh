#!/usr/bin/env bash
# Install everything into .venv and run the main job on an example brief, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/shotline estimate examples/bakery-shotlist.md --model fal/kling-video-v2.6-pro --audio
.venv/bin/shotline plan examples/bakery-shotlist.md
