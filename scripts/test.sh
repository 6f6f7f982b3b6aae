#!/usr/bin/env bash
# Set up and run the whole test suite: the one command README gives for tests.
# Starts the local Postgres and Redis when they are down, installs the project into
# ./.venv (created if missing), then runs pytest. Extra arguments go to pytest.
# NOISEFA_FULL=1 runs the long fault, fuzz and load sizes instead of CI's reduced ones.
set -euo pipefail
cd "$(dirname "$0")/.."

wait_for() { # name, deadline seconds, command...
  local name=$1 deadline=$2; shift 2
  local end=$((SECONDS + deadline))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then echo "error: $name did not come up in ${deadline}s" >&2; return 1; fi
    sleep 0.5
  done
}

if command -v pg_isready >/dev/null; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  fi
  wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
fi
if command -v redis-cli >/dev/null; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
  wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping
fi

# The dashboard's browser tests drive Debian's chromium through its chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver with apt-get (browser tests)"
    apt-get update -q && apt-get install -y -q chromium chromium-driver
  else
    echo "chromium/chromedriver missing: the dashboard's browser tests will be skipped"
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
