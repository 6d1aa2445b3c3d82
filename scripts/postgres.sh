#!/usr/bin/env bash
# Makes PostgreSQL available and prints `export DATABASE_URL=…` for eval.
#
# 1. If DATABASE_URL is set and answers, use it as it is.
# 2. Otherwise start (creating on first use) a project-local cluster under
#    .local/pg with the installed PostgreSQL binaries, on a free port, owned
#    by a non-root user (postgres refuses to run as root).
#
# Usage: eval "$(scripts/postgres.sh)"      # start if needed, export the URL
#        scripts/postgres.sh stop           # stop the project-local cluster
#        scripts/postgres.sh crash          # stop it as a crash would (chaos runs)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# PG_BASE: where the cluster lives (tests start throwaway clusters elsewhere).
base="${PG_BASE:-$root/.local/pg}"
data="$base/data"
db_name=orders

log() { printf '%s\n' "postgres.sh: $*" >&2; }

find_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return; }
    return 1
}

# Runs a command as the cluster's owner: ourselves, or `postgres` when root.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

answers() { # url
    local psql="${bindir:-}/psql"
    [ -x "$psql" ] || psql=$(command -v psql || true)
    [ -n "$psql" ] && PGCONNECT_TIMEOUT=3 "$psql" "$1" -Atqc 'select 1' >/dev/null 2>&1
}

# A port is free if it can be bound (a port nobody listens on may still be
# held by an outgoing connection, so a connect test is not enough). Bound as
# PostgreSQL binds it, with SO_REUSEADDR: right after a crash the old
# connections linger in TIME_WAIT, and the cluster must come back on its port.
bindable() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

free_port() {
    local port
    for port in $(seq 55432 55532); do
        if bindable "$port"; then
            echo "$port"; return
        fi
    done
    log "no free port in 55432-55532"; exit 1
}

if [ "${1:-}" = "stop" ] || [ "${1:-}" = "crash" ]; then
    bindir=$(find_bindir) || exit 0
    owner=$( [ "$(id -u)" -eq 0 ] && echo postgres || id -un )
    # crash: no shutdown checkpoint, clients cut off; the next start recovers
    # from the WAL, as after a power cut (committed work survives).
    mode=fast; [ "$1" = crash ] && mode=immediate
    if [ -f "$data/postmaster.pid" ]; then
        as_owner "$bindir/pg_ctl" -D "$data" -m "$mode" -w stop >&2 && log "stopped ($mode)"
    fi
    exit 0
fi

if [ -n "${DATABASE_URL:-}" ] && [ -z "${ORDERS_LOCAL_PG:-}" ]; then
    if answers "$DATABASE_URL"; then
        log "using DATABASE_URL (it answers)"
        printf 'export DATABASE_URL=%q\n' "$DATABASE_URL"
        exit 0
    fi
    log "DATABASE_URL does not answer; starting the project-local cluster instead"
fi

if ! bindir=$(find_bindir); then
    log "no PostgreSQL server binaries (initdb, pg_ctl) found."
    log "install them with:  sudo apt-get install -y postgresql"
    exit 1
fi

owner=$( [ "$(id -u)" -eq 0 ] && echo postgres || id -un )
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root, creating the system user 'postgres' to own the cluster"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

mkdir -p "$base"
if [ "$(id -u)" -eq 0 ]; then
    chown "$owner" "$base"
    # The owner must be able to reach the data directory through every parent
    # (a clone under mktemp -d is 0700): grant traversal only, never listing.
    dir="$base"
    while [ "$dir" != "/" ]; do
        dir=$(dirname "$dir")
        if ! runuser -u "$owner" -- test -x "$dir"; then
            log "granting $owner traversal (o+x) of $dir"
            chmod o+x "$dir"
        fi
    done
fi

if [ ! -f "$data/PG_VERSION" ]; then
    log "creating a cluster in $data (first use)"
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null 2>"$base/initdb.err" \
        || as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    free_port > "$base/port"
fi
port=$(cat "$base/port")
url="postgres://postgres@127.0.0.1:$port/$db_name"

if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    # Our cluster is down, so whatever holds its port (another checkout's
    # cluster, another program) is not ours: move to a free port.
    if ! bindable "$port"; then
        port=$(free_port); echo "$port" > "$base/port"
        url="postgres://postgres@127.0.0.1:$port/$db_name"
        log "port taken by something else; moved to $port"
    fi
    # A free port can be taken between choosing and binding (it may be in
    # the range the kernel hands to outgoing connections): retry elsewhere.
    for attempt in 1 2 3 4 5; do
        log "starting PostgreSQL on 127.0.0.1:$port"
        if as_owner "$bindir/pg_ctl" -D "$data" -l "$base/server.log" -w -t 60 \
            -o "-p $port -k $base -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB" start >/dev/null; then
            break
        fi
        if [ "$attempt" -lt 5 ] && tail -n 5 "$base/server.log" | grep -q "Address already in use"; then
            port=$(free_port); echo "$port" > "$base/port"
            url="postgres://postgres@127.0.0.1:$port/$db_name"
            continue
        fi
        log "failed to start; see $base/server.log"; tail -n 20 "$base/server.log" >&2; exit 1
    done
fi

admin="postgres://postgres@127.0.0.1:$port/postgres"
if ! "$bindir/psql" "$admin" -Atqc "select 1 from pg_database where datname = '$db_name'" | grep -q 1; then
    "$bindir/psql" "$admin" -qc "create database $db_name" >/dev/null
    log "created database $db_name"
fi
printf 'export DATABASE_URL=%q\n' "$url"
