#!/usr/bin/env bash
# Runs Herald's benchmark suite: every figure beside its baseline, measured in one run.
# Extra arguments go to herald-bench (e.g. `--only ingest,batch --seconds 10`);
# `target/release/herald-bench --help` lists them. Results: target/bench/results.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check-toolchain.sh
setup_env=$(timescale/setup.sh)
eval "$setup_env"
export HERALD_DATABASE_URL HERALD_REDIS_URL
cargo build --release --locked -p bench -p command-service -p query-service -p projector
exec target/release/herald-bench "$@"
