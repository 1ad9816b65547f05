#!/usr/bin/env bash
# Make sure the services the tests use are up: PostgreSQL on 127.0.0.1:5432 (or
# SHOTLINE_TEST_POSTGRES_URL's server) and Redis on 127.0.0.1:6379 (or
# SHOTLINE_TEST_REDIS_URL's). Starts a local one that is installed but stopped; otherwise
# says what is missing and fails, so no test ever skips for want of a server.
# (The S3-compatible store the tests use is moto's server, started by the tests themselves.)
set -euo pipefail

up() { python3 - "$1" "$2" <<'PY'
import os, socket, sys
from urllib.parse import urlsplit
variable, default = sys.argv[1], sys.argv[2]
where = urlsplit(os.environ.get(variable, default).replace("+psycopg", ""))
try:
    socket.create_connection((where.hostname or "127.0.0.1", where.port), timeout=3).close()
except OSError:
    sys.exit(1)
PY
}
pg_up() { up SHOTLINE_TEST_POSTGRES_URL postgresql://127.0.0.1:5432/test; }
redis_up() { up SHOTLINE_TEST_REDIS_URL redis://127.0.0.1:6379/0; }

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

if ! redis_up; then
    if command -v redis-server >/dev/null; then
        echo "starting Redis"
        redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no \
            >/dev/null || true
        for _ in $(seq 30); do redis_up && break; sleep 1; done
    fi
    if ! redis_up; then
        echo "Redis is not reachable on 127.0.0.1:6379 and could not be started here." >&2
        echo "The scale-out tests need it: install redis-server, or set SHOTLINE_TEST_REDIS_URL." >&2
        exit 1
    fi
fi
