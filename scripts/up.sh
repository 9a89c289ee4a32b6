#!/usr/bin/env bash
# Starts the whole of Herald locally: TimescaleDB, Redis and the Pushgateway (through
# timescale/setup.sh), migrations, then the command service, query service and projector
# in the background. Logs and pid files go to .herald/; `scripts/down.sh` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.herald"
mkdir -p "$state/logs" "$state/pids"

scripts/check-toolchain.sh
setup_env=$(timescale/setup.sh)
eval "$setup_env"
export HERALD_DATABASE_URL HERALD_REDIS_URL HERALD_PUSHGATEWAY_URL
export HERALD_LOG_FORMAT="${HERALD_LOG_FORMAT:-json}"

echo "up: building (release)" >&2
cargo build --release --locked -p command-service -p query-service -p projector >&2
bin="$root/target/release"

# One explicit migration run, as an init container would; each service also migrates on
# start (under the same advisory lock), so this is belt and braces, not a requirement.
"$bin/command-service" migrate

scripts/down.sh --services-only >/dev/null 2>&1 || true

declare -A addr=(
    [command-service]="${HERALD_COMMAND_ADDR:-127.0.0.1:8080}"
    [query-service]="${HERALD_QUERY_ADDR:-127.0.0.1:8081}"
    [projector]="${HERALD_PROJECTOR_ADDR:-127.0.0.1:8082}"
)
for svc in command-service query-service projector; do
    nohup "$bin/$svc" >>"$state/logs/$svc.log" 2>&1 </dev/null &
    echo $! >"$state/pids/$svc.pid"
done

for svc in command-service query-service projector; do
    url="http://${addr[$svc]}/health/ready"
    for _ in $(seq 1 120); do
        if curl -sf -o /dev/null --max-time 2 "$url"; then
            break
        fi
        if ! kill -0 "$(cat "$state/pids/$svc.pid")" 2>/dev/null; then
            echo "up: $svc exited; last log lines:" >&2
            tail -n 20 "$state/logs/$svc.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    curl -sf -o /dev/null --max-time 2 "$url" || { echo "up: $svc not ready at $url" >&2; exit 1; }
done

cat <<MSG
Herald is up.
  command service  http://${addr[command-service]}   (POST commands)
  query service    http://${addr[query-service]}   (GET reads and statistics)
  projector        http://${addr[projector]}   (health and metrics)
  TimescaleDB      ${HERALD_DATABASE_URL}
  Redis            ${HERALD_REDIS_URL}
  Pushgateway      ${HERALD_PUSHGATEWAY_URL}
Logs: .herald/logs/   Stop: scripts/down.sh   (add --all to stop TimescaleDB and the Pushgateway too)
MSG
