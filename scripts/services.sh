#!/usr/bin/env bash
# Make sure the services the tests use are up: PostgreSQL on 127.0.0.1:5432 (or
# SHOTLINE_TEST_POSTGRES_URL's server). Starts a local one that is installed but stopped;
# otherwise says what is missing and fails, so no test ever skips for want of a server.
set -euo pipefail

pg_up() { python3 - "$@" <<'PY'
import os, socket, sys
from urllib.parse import urlsplit
url = os.environ.get("SHOTLINE_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
where = urlsplit(url.replace("+psycopg", ""))
try:
    socket.create_connection((where.hostname or "127.0.0.1", where.port or 5432), timeout=3).close()
except OSError:
    sys.exit(1)
PY
}

if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "starting PostgreSQL"
        for version in /etc/postgresql/*; do
            pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
        done
        for _ in $(seq 30); do pg_up && break; sleep 1; done
    fi
    if ! pg_up; then
        echo "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started here." >&2
        echo "The tests need it: install and start it, or set SHOTLINE_TEST_POSTGRES_URL." >&2
        exit 1
    fi
fi
