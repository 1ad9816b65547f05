#!/usr/bin/env bash
# Install everything into .venv and run the main job: render an example brief offline
# with the free local provider, then print where the video is.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/shotline estimate examples/bakery-shotlist.md --model fal/kling-video-v2.6-pro --audio
.venv/bin/shotline render examples/bakery-shotlist.md --audio -o out/bakery.mp4 "$@"
