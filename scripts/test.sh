#!/usr/bin/env bash
# Runs every Herald test against real PostgreSQL/TimescaleDB and Redis.
# Brings the local infrastructure up first (idempotent, seconds when already up), sweeps
# databases and Redis keys left by earlier runs, then runs the whole workspace's tests.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p domain`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check-toolchain.sh
# Assigned first: a failing setup must stop the run, which `eval "$(...)"` would hide.
setup_env=$(timescale/setup.sh)
eval "$setup_env"
export HERALD_DATABASE_URL HERALD_REDIS_URL HERALD_PUSHGATEWAY_URL

# Tests name their databases herald_test_<uuid> and their keys herald-test:<uuid>:...;
# whatever an interrupted run left behind goes now. (Two concurrent runs on one machine
# would sweep each other's: run one at a time.)
admin_url="${HERALD_TEST_ADMIN_URL:-${HERALD_DATABASE_URL%/*}/postgres}"
psql -qAt "$admin_url" -c "SELECT 'DROP DATABASE IF EXISTS ' || quote_ident(datname) || ' WITH (FORCE);' FROM pg_database WHERE datname LIKE 'herald\_test\_%'" |
    psql -q "$admin_url" >/dev/null
redis_host_port="${HERALD_REDIS_URL#redis://}"
redis-cli -h "${redis_host_port%:*}" -p "${redis_host_port##*:}" --scan --pattern 'herald-test:*' |
    xargs -r -n 500 redis-cli -h "${redis_host_port%:*}" -p "${redis_host_port##*:}" del >/dev/null

# Property tests run the case counts their files state, whatever the environment: the
# domain's properties 1,000 cases each (domain/src/tests/properties.rs, including the
# order-independence and accepted/refused tallies), generated request bodies 600
# (system-tests/tests/generated_bodies.rs).
export HERALD_TEST_ADMIN_URL="$admin_url"
exec cargo test --workspace --locked "$@"
