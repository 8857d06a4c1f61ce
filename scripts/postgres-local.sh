#!/usr/bin/env bash
# postgres-local.sh -- a local PostgreSQL server for metalab's tests (Debian 12, run as root).
#
# Usage:
#   scripts/postgres-local.sh [setup]   install (if missing), start, create role+db, print env line
#   scripts/postgres-local.sh start     start the server (no-op if running), wait until ready
#   scripts/postgres-local.sh stop      stop the server cleanly (pg_ctl -m fast)
#   scripts/postgres-local.sh kill      stop it like a crash (pg_ctl -m immediate: no checkpoint)
#   scripts/postgres-local.sh restart   stop (fast) then start
#   scripts/postgres-local.sh status    exit 0 if it accepts connections on 127.0.0.1:5432, else 3
#   scripts/postgres-local.sh pid       print the postmaster's PID (kill -9 it for a hard crash)
#   scripts/postgres-local.sh url       print METALAB_TEST_POSTGRES_URL=... (no server check)
#
# What `setup` does, every step idempotent:
#   * apt-get installs `postgresql` when its server binaries are missing;
#   * uses Debian's cluster "<version> main" (owner `postgres`, port 5432, listening on
#     localhost), creating it with pg_createcluster if it does not exist -- initdb refuses to
#     run as root, pg_ctlcluster drops to the `postgres` user by itself;
#   * drops a small conf.d file (max_connections=200) and starts the cluster;
#   * creates the LOGIN role `metalab` (CREATEDB, so tests may make throw-away databases) and
#     the database `metalab` owned by it; the role's password is random, kept in ~/.pgpass
#     (mode 0600, created under umask 077) and reused on later runs;
#   * waits for pg_isready, checks a real password login, and prints on STDOUT exactly
#         METALAB_TEST_POSTGRES_URL=postgresql://metalab@127.0.0.1:5432/metalab
#     (all progress messages go to stderr, so `export "$(scripts/postgres-local.sh)"` works).
#     The URL carries no password: libpq/psycopg read it from ~/.pgpass (or $PGPASSFILE).
#
# Fault tests: `scripts/postgres-local.sh kill` (or `stop`, or `kill -9 $(... pid)`), then
# `scripts/postgres-local.sh start`, which returns once connections are accepted again (after
# crash recovery). Raw equivalents: `pg_ctlcluster 15 main stop -m immediate` and
# `pg_ctlcluster 15 main start` (the latter returns before the server is ready: poll
# `pg_isready -h 127.0.0.1 -p 5432`).
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=${METALAB_PG_PORT:-5432}
PG_ROLE=metalab
PG_DB=metalab
PG_CLUSTER=${METALAB_PG_CLUSTER:-main}
READY_TIMEOUT=${METALAB_PG_READY_TIMEOUT:-60}

log() { printf '[postgres-local] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run me as root (I use apt-get and pg_ctlcluster)"

url() { printf 'postgresql://%s@%s:%s/%s' "$PG_ROLE" "$PG_HOST" "$PG_PORT" "$PG_DB"; }

pgpass_file() {
    if [ -n "${PGPASSFILE:-}" ]; then
        printf '%s' "$PGPASSFILE"
    else
        local home=${HOME:-}
        [ -n "$home" ] || home=$(getent passwd "$(id -un)" | cut -d: -f6)
        printf '%s/.pgpass' "$home"
    fi
}

# Highest PostgreSQL version whose server binaries are installed ("" if none).
pg_version() {
    local d v best=""
    for d in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$d" ] || continue
        v=${d#/usr/lib/postgresql/}
        v=${v%%/*}
        if [ -z "$best" ] || [ "$v" -gt "$best" ]; then best=$v; fi
    done
    printf '%s' "$best"
}

ensure_installed() {
    if [ -n "$(pg_version)" ] && command -v pg_ctlcluster >/dev/null; then
        return
    fi
    log "installing postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q postgresql >&2; then
        apt-get update -q >&2
        apt-get install -y -q postgresql >&2
    fi
    [ -n "$(pg_version)" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/postgres"
}

require_version() {
    PG_VER=$(pg_version)
    [ -n "$PG_VER" ] || die "PostgreSQL is not installed; run '$0 setup' first"
    PG_BIN=/usr/lib/postgresql/$PG_VER/bin
}

is_ready() { "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 2; }

ensure_cluster() {
    if [ ! -f "/etc/postgresql/$PG_VER/$PG_CLUSTER/postgresql.conf" ]; then
        log "creating cluster $PG_VER/$PG_CLUSTER on port $PG_PORT"
        pg_createcluster --port "$PG_PORT" "$PG_VER" "$PG_CLUSTER" >&2
    fi
    local confd=/etc/postgresql/$PG_VER/$PG_CLUSTER/conf.d
    install -d -o postgres -g postgres "$confd"
    local want
    want=$(printf '%s\n' \
        '# written by metalab scripts/postgres-local.sh (test server)' \
        "listen_addresses = 'localhost'" \
        "port = $PG_PORT" \
        'max_connections = 200')
    if [ "$(cat "$confd/metalab-test.conf" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" >"$confd/metalab-test.conf"
        chown postgres:postgres "$confd/metalab-test.conf"
        if is_running; then
            log "configuration changed: restarting the cluster"
            pg_ctlcluster "$PG_VER" "$PG_CLUSTER" restart -m fast >&2
        fi
    fi
}

is_running() { pg_ctlcluster "$PG_VER" "$PG_CLUSTER" status >/dev/null 2>&1; }

do_start() {
    # /run is a tmpfs on real hosts: the socket directory may be gone after a reboot.
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    # Gate on "accepts connections", not on the pid file, and retry: right after a SIGKILL of
    # the postmaster its children linger for a moment and a new postmaster refuses to start
    # (shared memory still in use); a server in crash recovery is running but not ready yet.
    local deadline=$((SECONDS + READY_TIMEOUT)) next_try=0
    while ! is_ready; do
        if [ "$SECONDS" -ge "$next_try" ] && ! is_running; then
            log "starting cluster $PG_VER/$PG_CLUSTER"
            pg_ctlcluster "$PG_VER" "$PG_CLUSTER" start >&2 ||
                log "pg_ctlcluster start exited with $?: trying again shortly"
            next_try=$((SECONDS + 2))
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "server not ready on $PG_HOST:$PG_PORT after ${READY_TIMEOUT}s; last log lines:"
            tail -n 40 "/var/log/postgresql/postgresql-$PG_VER-$PG_CLUSTER.log" >&2 || true
            die "PostgreSQL did not become ready"
        fi
        sleep 0.3
    done
    log "ready on $PG_HOST:$PG_PORT"
}

do_stop() {
    local mode=$1
    if is_running; then
        log "stopping cluster $PG_VER/$PG_CLUSTER (-m $mode)"
        pg_ctlcluster "$PG_VER" "$PG_CLUSTER" stop -m "$mode" >&2 || true
    else
        log "cluster $PG_VER/$PG_CLUSTER is not running"
    fi
    if is_ready; then
        die "cluster $PG_VER/$PG_CLUSTER still accepts connections after stop"
    fi
}

# PID of the running postmaster (for tests that want a real SIGKILL), from postmaster.pid.
do_pid() {
    local datadir pid
    datadir=$(awk -F"'" '/^[[:space:]]*data_directory[[:space:]]*=/ { print $2; exit }' \
        "/etc/postgresql/$PG_VER/$PG_CLUSTER/postgresql.conf")
    pid=$(head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        die "no running postmaster for cluster $PG_VER/$PG_CLUSTER"
    fi
    printf '%s\n' "$pid"
}

# The password stored for our role in the pgpass file, or "" if none.
stored_password() {
    local f
    f=$(pgpass_file)
    [ -f "$f" ] || return 0
    awk -F: -v h="$PG_HOST" -v p="$PG_PORT" -v d="$PG_DB" -v u="$PG_ROLE" \
        '$1 == h && $2 == p && ($3 == d || $3 == "*") && $4 == u { print $5; exit }' "$f"
}

# Rewrite the pgpass file keeping other people's lines. The new file is created under
# umask 077 (so it is 0600 from birth) next to the old one, then renamed over it.
write_pgpass() {
    local pw=$1 f tmp
    f=$(pgpass_file)
    tmp=$(
        umask 077
        mktemp "$f.XXXXXX"
    )
    {
        # Our lines first (some tests read the password from the first line): any database
        # (tests may create their own), via both loopback spellings.
        printf '%s:%s:*:%s:%s\n' "127.0.0.1" "$PG_PORT" "$PG_ROLE" "$pw"
        printf '%s:%s:*:%s:%s\n' "localhost" "$PG_PORT" "$PG_ROLE" "$pw"
        if [ -f "$f" ]; then
            awk -F: -v p="$PG_PORT" -v u="$PG_ROLE" \
                '!(($1 == "127.0.0.1" || $1 == "localhost") && $2 == p && $4 == u)' "$f"
        fi
    } >"$tmp"
    mv -f "$tmp" "$f"
    log "password for role $PG_ROLE stored in $f"
}

do_setup() {
    ensure_installed
    require_version
    ensure_cluster
    do_start

    local pw
    pw=$(stored_password)
    if [ -z "$pw" ]; then
        pw=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    fi

    log "creating role $PG_ROLE and database $PG_DB (if missing)"
    # Fed on stdin so that the password never shows up in a process listing.
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres >&2 <<SQL
\set pw '$pw'
SELECT 'CREATE ROLE $PG_ROLE' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE')\gexec
ALTER ROLE $PG_ROLE WITH LOGIN CREATEDB PASSWORD :'pw';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')\gexec
SQL
    write_pgpass "$pw"

    if ! PGPASSFILE=$(pgpass_file) psql -X -q -w "$(url)" -c 'select 1' >/dev/null; then
        die "password login as $PG_ROLE to $(url) failed"
    fi
    log "login as $PG_ROLE checked"
    printf 'METALAB_TEST_POSTGRES_URL=%s\n' "$(url)"
}

cmd=${1:-setup}
case "$cmd" in
setup) do_setup ;;
start)
    require_version
    do_start
    ;;
stop)
    require_version
    do_stop fast
    ;;
kill)
    require_version
    do_stop immediate
    ;;
restart)
    require_version
    do_stop fast
    do_start
    ;;
status)
    require_version
    if is_ready; then
        log "accepting connections on $PG_HOST:$PG_PORT"
    else
        log "not accepting connections on $PG_HOST:$PG_PORT"
        exit 3
    fi
    ;;
pid)
    require_version
    do_pid
    ;;
url) printf 'METALAB_TEST_POSTGRES_URL=%s\n' "$(url)" ;;
-h | --help | help) sed -n '2,30p' "$0" ;;
*) die "unknown command '$cmd' (setup|start|stop|kill|restart|status|pid|url)" ;;
esac
