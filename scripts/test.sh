#!/usr/bin/env bash
# Install everything into .venv and run every check CI runs: ruff, mypy, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check src tests bench
.venv/bin/mypy
# The browser tests drive Debian's Chromium; Playwright's own browser download is not used.
if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
# Postgres and Redis are part of the test run (every race test runs on Postgres too, the
# scale-out tests on both): start them if they are installed but stopped, and stop here
# with the reason if one cannot be reached.
bash scripts/services.sh
.venv/bin/pytest "$@"
