#!/usr/bin/env bash
# Stops what timescale/setup.sh started for Herald: the PostgreSQL cluster
# 15/herald and the Pushgateway recorded in its pidfile. Redis is left alone:
# setup.sh reuses whatever Redis answers on 6379, which may be the machine's
# own. The main PostgreSQL cluster is never touched. Safe to run repeatedly.
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=herald
PUSHGATEWAY_BIN=/usr/bin/prometheus-pushgateway
PUSHGATEWAY_PIDFILE=/run/herald-pushgateway.pid
LOCK_FILE=/run/lock/herald-setup.lock
LOCK_TIMEOUT="${HERALD_SETUP_LOCK_TIMEOUT:-1800}"

log() { echo "stop: $*" >&2; }
die() { echo "stop: ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

# Do not pull services from under a setup.sh that is still bringing them up.
mkdir -p "$(dirname "$LOCK_FILE")"
exec 9>"$LOCK_FILE"
flock -w "$LOCK_TIMEOUT" 9 || die "could not take ${LOCK_FILE} within ${LOCK_TIMEOUT}s"

if command -v pg_ctlcluster >/dev/null 2>&1 &&
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" status >/dev/null 2>&1; then
    log "stopping cluster ${PG_VERSION}/${PG_CLUSTER}"
    # Fast mode: test sessions left open should not keep the cluster up.
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" stop -m fast 9>&-
else
    log "cluster ${PG_VERSION}/${PG_CLUSTER} is not running"
fi

if [[ -f $PUSHGATEWAY_PIDFILE ]]; then
    log "stopping Pushgateway (pid $(cat "$PUSHGATEWAY_PIDFILE"))"
    # --exec guards against a stale pidfile naming a reused pid.
    start-stop-daemon --stop --quiet --oknodo --pidfile "$PUSHGATEWAY_PIDFILE" \
        --exec "$PUSHGATEWAY_BIN" --retry TERM/10/KILL/5 --remove-pidfile
else
    log "no Pushgateway pidfile; nothing to stop"
fi
