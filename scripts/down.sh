#!/usr/bin/env bash
# Stops what scripts/up.sh started. `--all` also stops Herald's TimescaleDB cluster and
# Pushgateway; the machine's own Redis and PostgreSQL are never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
state=.herald/pids
all=0
[[ ${1:-} == --all ]] && all=1

for pidfile in "$state"/*.pid; do
    [[ -e $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        # Graceful shutdown drains requests and deletes the Pushgateway group.
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        echo "stopped $(basename "$pidfile" .pid)"
    fi
    rm -f "$pidfile"
done

if ((all)); then
    timescale/stop.sh
fi
