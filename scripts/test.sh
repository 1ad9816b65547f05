#!/usr/bin/env bash
# Install everything into .venv and run every check CI runs: ruff, mypy, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
