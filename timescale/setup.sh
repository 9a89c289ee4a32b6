#!/usr/bin/env bash
# Brings up Herald's local infrastructure on a Debian bookworm machine without
# Docker: a PostgreSQL 15 cluster of its own with TimescaleDB (built from
# Debian trixie's source package), Redis and a Prometheus Pushgateway.
# Run as root. Idempotent: a second run does no apt work and no build.
#
# Progress goes to stderr; stdout carries only `export` lines, so callers can
#   eval "$(timescale/setup.sh)"
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=herald
PG_PORT="${HERALD_PG_PORT:-55432}"
PG_DB=herald
REDIS_PORT=6379
PUSHGATEWAY_PORT="${HERALD_PUSHGATEWAY_PORT:-59091}"

PG_BINDIR="/usr/lib/postgresql/${PG_VERSION}/bin"
PG_CONFDIR="/etc/postgresql/${PG_VERSION}/${PG_CLUSTER}"
TS_CONTROL="/usr/share/postgresql/${PG_VERSION}/extension/timescaledb.control"
TS_LIBDIR="/usr/lib/postgresql/${PG_VERSION}/lib"
TS_BUILD_ROOT=/var/cache/herald/timescaledb-src
TRIXIE_SRC_FILE=/etc/apt/sources.list.d/herald-trixie-src.sources
LOCK_FILE=/run/lock/herald-setup.lock
LOCK_TIMEOUT="${HERALD_SETUP_LOCK_TIMEOUT:-1800}"
PUSHGATEWAY_BIN=/usr/bin/prometheus-pushgateway
PUSHGATEWAY_PIDFILE=/run/herald-pushgateway.pid
PUSHGATEWAY_LOG=/var/log/herald-pushgateway.log
REDIS_LOG=/var/log/redis/herald.log

# Keep the caller's stdout for the final export lines only; everything else
# (apt, psql, our own messages) lands on stderr and cannot pollute an eval.
exec 3>&1 1>&2

log() { echo "setup: $*" >&2; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

# Daemons must not inherit the export pipe (fd 3) or the lock (fd 9):
# holding the pipe would make `$(setup.sh)` hang, holding the lock would
# block every later run.
detached() { "$@" 3>&- 9>&-; }

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds, fail loudly.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${limit}s waiting for ${what}"
        fi
        sleep 0.5
    done
}

[[ $(id -u) -eq 0 ]] || die "must run as root"

mkdir -p "$(dirname "$LOCK_FILE")"
exec 9>"$LOCK_FILE"
# A concurrent caller (test runner and start script) waits for the first one,
# which may be busy compiling TimescaleDB for a while.
if ! flock -w "$LOCK_TIMEOUT" 9; then
    die "could not take ${LOCK_FILE} within ${LOCK_TIMEOUT}s (another setup.sh still running?)"
fi

export DEBIAN_FRONTEND=noninteractive

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
    else
        # redis-cli may be absent before redis-tools is installed; speak RESP by hand.
        # shellcheck disable=SC2016 # expanded by the inner bash
        timeout 3 bash -c '
            exec 5<>"/dev/tcp/127.0.0.1/$1" || exit 1
            printf "PING\r\n" >&5
            IFS= read -r reply <&5
            [[ $reply == "+PONG"* ]]' _ "$REDIS_PORT" 2>/dev/null
    fi
}

pushgateway_ready() {
    curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${PUSHGATEWAY_PORT}/-/ready"
}

timescaledb_installed() {
    [[ -f $TS_CONTROL ]] && compgen -G "${TS_LIBDIR}/timescaledb*.so" >/dev/null
}

# ---------------------------------------------------------------------------
# Apt source for trixie's source packages.
#
# The mirror and its key come from the machine's own bookworm entry so that
# whatever mirror/proxy/snapshot this machine is set up for is reused.

# Turns one-line `deb [opts] URI suite comps...` entries into deb822 stanzas so
# one parser handles both formats.
one_line_to_deb822() {
    awk '
        /^[[:space:]]*(#|$)/ { next }
        {
            line = $0
            opts = ""
            if (match(line, /\[[^]]*\]/)) {
                opts = substr(line, RSTART + 1, RLENGTH - 2)
                line = substr(line, 1, RSTART - 1) " " substr(line, RSTART + RLENGTH)
            }
            n = split(line, f, /[[:space:]]+/)
            k = 0
            for (i = 1; i <= n; i++) if (f[i] != "") w[++k] = f[i]
            if (k < 3) next
            print "Types: " w[1]
            print "URIs: " w[2]
            print "Suites: " w[3]
            comps = ""
            for (i = 4; i <= k; i++) comps = comps (comps == "" ? "" : " ") w[i]
            print "Components: " comps
            m = split(opts, o, /[[:space:]]+/)
            for (i = 1; i <= m; i++) if (o[i] ~ /^signed-by=/) print "Signed-By: " substr(o[i], 11)
            print ""
        }' "$@"
}

# Prints the URIs: and Signed-By: fields of the Debian archive's bookworm
# entry. Candidates need Types deb, the suite exactly "bookworm" (so
# bookworm-security/-updates entries and the debian-security archive do not
# qualify on their own) and component main. Among several (a third-party repo
# may also say "bookworm main") the one whose downloaded Release file says
# Origin: Debian wins, then one signed by the Debian archive keyring.
debian_bookworm_entry() {
    awk '
        function has(list, word,   n, a, i) {
            n = split(list, a, /[[:space:]]+/)
            for (i = 1; i <= n; i++) if (a[i] == word) return 1
            return 0
        }
        function release_is_debian(uris,   n, a, i, p, f, file, line, found) {
            n = split(uris, a, /[[:space:]]+/)
            p = ""
            for (i = 1; i <= n; i++) if (a[i] != "") { p = a[i]; break }
            if (p == "") return 0
            sub(/^[a-z+]*:\/\//, "", p)
            sub(/\/+$/, "", p)
            gsub(/\//, "_", p)
            found = 0
            for (f = 0; f < 2; f++) {
                file = "/var/lib/apt/lists/" p "_dists_bookworm_" (f ? "Release" : "InRelease")
                while ((getline line < file) > 0) if (line == "Origin: Debian") found = 1
                close(file)
            }
            return found
        }
        function flush(   score) {
            if (nfields && has(val["types"], "deb") && has(val["suites"], "bookworm") \
                && has(val["components"], "main") && tolower(val["enabled"]) !~ /no/ \
                && val["uris"] !~ /cdrom:/) {
                score = 1
                if (val["signed-by"] ~ /debian-archive-keyring/) score = 2
                if (release_is_debian(val["uris"])) score = 3
                if (score > best) {
                    best = score
                    out = "URIs:" val["uris"]
                    if ("signed-by" in raw) out = out "\n" raw["signed-by"]
                }
            }
            split("", val); split("", raw); nfields = 0; cur = ""
        }
        BEGIN { best = 0 }
        /^#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        /^[ \t]/ {
            if (cur != "") { raw[cur] = raw[cur] "\n" $0; val[cur] = val[cur] " " $0 }
            next
        }
        {
            i = index($0, ":")
            if (i == 0) next
            cur = tolower(substr($0, 1, i - 1))
            val[cur] = substr($0, i + 1)
            # Signed-By may be an inline key spanning continuation lines; it is
            # copied verbatim under its canonical name.
            raw[cur] = (cur == "signed-by" ? "Signed-By:" substr($0, i + 1) : $0)
            nfields++
        }
        END { flush(); if (best) print out }
    '
}

ensure_trixie_source() {
    local files=() entry content
    shopt -s nullglob
    files=(/etc/apt/sources.list.d/*.sources)
    local list_files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    local existing_lists=()
    local f
    for f in "${list_files[@]}"; do [[ -f $f ]] && existing_lists+=("$f"); done

    entry=$(
        {
            for f in "${files[@]}"; do
                [[ $f == "$TRIXIE_SRC_FILE" ]] && continue
                cat "$f"
                echo
            done
            if ((${#existing_lists[@]})); then one_line_to_deb822 "${existing_lists[@]}"; fi
        } | debian_bookworm_entry
    )
    [[ -n $entry ]] || die "no Debian bookworm apt entry (Types: deb, Suites: bookworm, Components: main) found in /etc/apt/sources.list{,.d}"

    # Source packages only: nothing from trixie can ever be installed from it.
    content=$(printf '%s\n' \
        "# Written by Herald's timescale/setup.sh: trixie source packages only," \
        "# to build TimescaleDB (not packaged for bookworm). Mirror and key are" \
        "# those of this machine's own bookworm entry." \
        "Types: deb-src" \
        "$(grep -i '^URIs:' <<<"$entry")" \
        "Suites: trixie" \
        "Components: main")
    if grep -qi '^Signed-By:' <<<"$entry"; then
        content+=$'\n'$(sed -n '/^Signed-By:/I,$p' <<<"$entry")
    fi
    if [[ ! -f $TRIXIE_SRC_FILE ]] || [[ $(cat "$TRIXIE_SRC_FILE") != "$content" ]]; then
        log "writing ${TRIXIE_SRC_FILE}"
        printf '%s\n' "$content" >"$TRIXIE_SRC_FILE"
    fi
}

# ---------------------------------------------------------------------------
# Packages

ensure_trixie_source

need_build=0
timescaledb_installed || need_build=1

# libssl-dev: Debian's PostgreSQL is built with OpenSSL, so TimescaleDB's
# build turns on USE_OPENSSL and needs the headers. curl: readiness probe of
# the Pushgateway. redis-tools: test runs sweep leftover keys with redis-cli.
# docker-compose: Debian's Compose v1 (1.29, no Docker engine needed); the tests run
# `docker-compose config` to validate docker-compose.yml (migrations/tests/deployment.rs).
# prometheus: promtool, which unit-tests the alert rules (`promtool test rules`).
wanted=(postgresql-15 postgresql-client postgresql-server-dev-15 cmake dpkg-dev build-essential
    libssl-dev prometheus-pushgateway prometheus curl redis-tools docker-compose)
if ! redis_ping; then
    wanted+=(redis-server)
fi
missing=()
for p in "${wanted[@]}"; do
    is_installed "$p" || missing+=("$p")
done

if ((${#missing[@]})) || ((need_build)); then
    log "apt-get update"
    apt-get update -q
fi
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------------------
# TimescaleDB from trixie's source package

if ((need_build)); then
    log "building TimescaleDB from Debian trixie source in ${TS_BUILD_ROOT}"
    rm -rf "$TS_BUILD_ROOT"
    mkdir -p "$TS_BUILD_ROOT"
    # apt's download sandbox user must be able to write here, otherwise apt
    # falls back to downloading as root with a warning.
    if getent passwd _apt >/dev/null; then chown _apt:root "$TS_BUILD_ROOT"; fi
    (cd "$TS_BUILD_ROOT" && apt-get source -q timescaledb) ||
        die "apt-get source timescaledb failed (is ${TRIXIE_SRC_FILE} indexed? try apt-get update)"
    shopt -s nullglob
    src_dirs=("$TS_BUILD_ROOT"/timescaledb-*/)
    shopt -u nullglob
    ((${#src_dirs[@]} == 1)) || die "expected one unpacked timescaledb-* directory in ${TS_BUILD_ROOT}"
    src_dir=${src_dirs[0]%/}
    (
        cd "$src_dir"
        bash ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
            -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG="${PG_BINDIR}/pg_config"
        make -C build -j2 install
    ) || die "TimescaleDB build failed in ${src_dir}"
    timescaledb_installed || die "TimescaleDB build finished but ${TS_CONTROL} or ${TS_LIBDIR}/timescaledb*.so is missing"
    log "built TimescaleDB $(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$TS_CONTROL")"
else
    log "TimescaleDB $(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$TS_CONTROL") already installed"
fi

# ---------------------------------------------------------------------------
# PostgreSQL cluster of Herald's own

if ! pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { f = 1 } END { exit !f }'; then
    log "creating cluster ${PG_VERSION}/${PG_CLUSTER} on port ${PG_PORT}"
    # An explicit locale keeps creation working when the caller's LANG names a
    # locale that is not generated on this machine.
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" --port "$PG_PORT" --locale C.UTF-8 --encoding UTF8 >&2
fi

pg_restart_needed=0

if [[ $(pg_conftool -s "$PG_VERSION" "$PG_CLUSTER" show port 2>/dev/null || true) != "$PG_PORT" ]]; then
    log "setting port ${PG_PORT}"
    pg_conftool "$PG_VERSION" "$PG_CLUSTER" set port "$PG_PORT"
    pg_restart_needed=1
fi

# Our settings live in conf.d so postgresql.conf stays Debian's; make sure it
# is included even if createcluster.conf was changed on this machine.
if ! grep -Eq "^[[:space:]]*include_dir[[:space:]]*=?[[:space:]]*'conf\.d'" "${PG_CONFDIR}/postgresql.conf"; then
    printf "\ninclude_dir = 'conf.d'\n" >>"${PG_CONFDIR}/postgresql.conf"
    pg_restart_needed=1
fi
mkdir -p "${PG_CONFDIR}/conf.d"
herald_conf="# Managed by Herald's timescale/setup.sh; edits are overwritten.
shared_preload_libraries = 'timescaledb'
listen_addresses = '127.0.0.1'
# Tests open many pools in parallel.
max_connections = 500
shared_buffers = 512MB
# A test that dies mid-transaction must not hold locks forever.
idle_in_transaction_session_timeout = '60s'
timescaledb.telemetry_level = off
# Loopback only; TLS would just make clients with sslmode=prefer negotiate
# against a snakeoil certificate.
ssl = off"
if [[ ! -f ${PG_CONFDIR}/conf.d/herald.conf ]] || [[ $(cat "${PG_CONFDIR}/conf.d/herald.conf") != "$herald_conf" ]]; then
    log "writing ${PG_CONFDIR}/conf.d/herald.conf"
    printf '%s\n' "$herald_conf" >"${PG_CONFDIR}/conf.d/herald.conf"
    chown postgres:postgres "${PG_CONFDIR}/conf.d/herald.conf"
    pg_restart_needed=1
fi

# Same trust rules as the machine's main cluster: this is a local dev/test box.
hba="# Managed by Herald's timescale/setup.sh; edits are overwritten.
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust"
if [[ $(cat "${PG_CONFDIR}/pg_hba.conf") != "$hba" ]]; then
    log "writing ${PG_CONFDIR}/pg_hba.conf"
    printf '%s\n' "$hba" >"${PG_CONFDIR}/pg_hba.conf"
    pg_restart_needed=1
fi

# There is no systemd here; this is also how the main cluster is started.
if pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" status >/dev/null 2>&1; then
    if ((pg_restart_needed)); then
        log "restarting cluster ${PG_VERSION}/${PG_CLUSTER} for changed configuration"
        detached pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" restart </dev/null ||
            die "restart of ${PG_VERSION}/${PG_CLUSTER} failed; see /var/log/postgresql/postgresql-${PG_VERSION}-${PG_CLUSTER}.log"
    fi
else
    log "starting cluster ${PG_VERSION}/${PG_CLUSTER}"
    detached pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" start </dev/null ||
        die "start of ${PG_VERSION}/${PG_CLUSTER} failed; see /var/log/postgresql/postgresql-${PG_VERSION}-${PG_CLUSTER}.log"
fi
wait_for 60 "PostgreSQL on 127.0.0.1:${PG_PORT}" "${PG_BINDIR}/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2

export PGCONNECT_TIMEOUT=10
psql_admin() { "${PG_BINDIR}/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
if [[ $(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '${PG_DB}'") != 1 ]]; then
    log "creating database ${PG_DB}"
    psql_admin -d postgres -c "CREATE DATABASE ${PG_DB} OWNER postgres"
fi
psql_admin -d "$PG_DB" -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS timescaledb"

# ---------------------------------------------------------------------------
# Redis: reuse whatever answers on 6379 (the machine may already run one).

if redis_ping; then
    log "Redis on 127.0.0.1:${REDIS_PORT} answers"
else
    log "starting redis-server on 127.0.0.1:${REDIS_PORT}"
    mkdir -p /var/lib/redis "$(dirname "$REDIS_LOG")"
    detached redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile "$REDIS_LOG" </dev/null >/dev/null ||
        die "redis-server failed to start; see ${REDIS_LOG}"
    wait_for 30 "Redis PONG on 127.0.0.1:${REDIS_PORT} (see ${REDIS_LOG})" redis_ping
fi

# ---------------------------------------------------------------------------
# Pushgateway on a port of its own; the package's default instance on 9091
# (which may or may not run) is never used.

if pushgateway_ready; then
    log "Pushgateway on 127.0.0.1:${PUSHGATEWAY_PORT} answers"
else
    log "starting Pushgateway on 127.0.0.1:${PUSHGATEWAY_PORT}"
    pg_user=root
    if getent passwd prometheus >/dev/null; then pg_user=prometheus; fi
    touch "$PUSHGATEWAY_LOG"
    chown "$pg_user" "$PUSHGATEWAY_LOG"
    detached start-stop-daemon --start --quiet --background \
        --make-pidfile --pidfile "$PUSHGATEWAY_PIDFILE" \
        --chuid "$pg_user" --output "$PUSHGATEWAY_LOG" \
        --exec "$PUSHGATEWAY_BIN" -- --web.listen-address="127.0.0.1:${PUSHGATEWAY_PORT}" </dev/null ||
        die "start-stop-daemon could not start ${PUSHGATEWAY_BIN} (an instance from ${PUSHGATEWAY_PIDFILE} on another port? run timescale/stop.sh)"
    wait_for 30 "Pushgateway on 127.0.0.1:${PUSHGATEWAY_PORT} (see ${PUSHGATEWAY_LOG})" pushgateway_ready
fi

log "ready"
cat >&3 <<EOF
export HERALD_DATABASE_URL=postgres://postgres@127.0.0.1:${PG_PORT}/${PG_DB}
export HERALD_REDIS_URL=redis://127.0.0.1:${REDIS_PORT}
export HERALD_PUSHGATEWAY_URL=http://127.0.0.1:${PUSHGATEWAY_PORT}
EOF
