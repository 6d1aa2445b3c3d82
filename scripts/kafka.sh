#!/usr/bin/env bash
# Makes a Kafka-protocol broker available and prints `export KAFKA_BROKERS=…`
# (and TANSU_BIN) for eval.
#
# 1. If KAFKA_BROKERS is set and answers, use it as it is.
# 2. Otherwise start Tansu (a Kafka-protocol broker from crates.io), installing
#    it first if it is missing (`cargo install tansu`: about 11 minutes on
#    2 cores, once). Two flavours, each on its own free port:
#      memory   - in-memory storage, for tests and benchmarks (the default)
#      durable  - SQLite storage under .local/kafka/durable, for `just run`
#
# Usage: eval "$(scripts/kafka.sh [memory|durable])"
#        eval "$(scripts/kafka.sh install)"  # only install; export TANSU_BIN
#        scripts/kafka.sh stop            # stop both
#        scripts/kafka.sh index DB        # index a SQLite storage's headers
#
# Tansu 0.6's SQLite storage has no index on its header table, and a fetch
# looks up each record's headers with its own query: every record fetched
# costs a scan of all the headers ever written. A consumer behind by
# thousands of records then waits longer than any request deadline, and the
# broker, which serves its storage one request at a time, answers nothing
# else meanwhile (ADR 0021). `index` adds the missing index; the broker's own
# `create table if not exists` leaves it in place.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
base="$root/.local/kafka"
export PATH="$HOME/.cargo/bin:$PATH"
log() { printf '%s\n' "kafka.sh: $*" >&2; }

answers() { # host:port[,host:port...] -> true if the first answers TCP
    local first=${1%%,*} host port
    host=${first%:*}; port=${first##*:}
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# Free = bindable (an outgoing connection may hold a port nobody listens on).
free_port() {
    local port
    for port in $(seq "$1" $(( $1 + 100 ))); do
        if python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
            echo "$port"; return
        fi
    done
    log "no free port from $1"; exit 1
}

stop_one() { # dir
    local dir=$1 pid
    [ -f "$dir/pid" ] || return 0
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        log "stopped the broker in $dir"
    fi
    rm -f "$dir/pid"
}

# The index, once the broker has created its tables (it does before it
# listens); SQLite lets a second connection add it while the broker runs.
index_headers() { # path of tansu.db
    python3 - "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("create index if not exists header_by_record on header (topition, offset_id)")
db.commit()
PY
}

if [ "${1:-}" = "index" ]; then
    [ -f "${2:-}" ] || { log "usage: kafka.sh index PATH/tansu.db"; exit 2; }
    index_headers "$2"
    exit 0
fi
if [ "${1:-}" = "stop" ]; then
    stop_one "$base/memory"; stop_one "$base/durable"
    exit 0
fi
flavour=${1:-memory}
case "$flavour" in memory|durable|install) ;; *) log "unknown flavour $flavour (memory|durable|install)"; exit 2 ;; esac

# The storage engines the broker is built with: SQLite (libsql) for `just
# run` and the tests that restart a broker, memory (dynostore) for the rest,
# PostgreSQL for the lab's brokers (docs/deploy.md).
FEATURES=dynostore,libsql,postgres

# True when cargo installed tansu with every engine above (an older install
# of this script's had no PostgreSQL engine: it is installed again).
has_engines() {
    python3 - "$HOME/.cargo/.crates2.json" "$FEATURES" <<'PY'
import json, sys
try:
    installs = json.load(open(sys.argv[1]))["installs"]
except (OSError, ValueError, KeyError):
    sys.exit(1)
wanted = set(sys.argv[2].split(","))
sys.exit(0 if any(k.startswith("tansu ") and wanted <= set(v.get("features", [])) for k, v in installs.items()) else 1)
PY
}

tansu_bin() {
    if [ -n "${TANSU_BIN:-}" ] && [ -x "$TANSU_BIN" ]; then echo "$TANSU_BIN"; return; fi
    command -v tansu >/dev/null 2>&1 && has_engines && command -v tansu && return
    return 1
}

if [ -n "${KAFKA_BROKERS:-}" ] && [ -z "${ORDERS_LOCAL_KAFKA:-}" ] && answers "$KAFKA_BROKERS"; then
    log "using KAFKA_BROKERS (it answers)"
    printf 'export KAFKA_BROKERS=%q\n' "$KAFKA_BROKERS"
    bin=$(tansu_bin || true)
    [ -n "$bin" ] && printf 'export TANSU_BIN=%q\n' "$bin"
    exit 0
fi

if ! bin=$(tansu_bin); then
    log "installing Tansu from crates.io with the $FEATURES engines (once; about 11 minutes on 2 cores)"
    cargo install tansu --locked --features "$FEATURES" >&2
    bin=$(tansu_bin)
fi
if [ "$flavour" = install ]; then
    printf 'export TANSU_BIN=%q\n' "$bin"
    exit 0
fi

dir="$base/$flavour"
mkdir -p "$dir"
port=""
[ -f "$dir/port" ] && port=$(cat "$dir/port")
running=false
if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null && [ -n "$port" ] && answers "127.0.0.1:$port"; then
    running=true
fi
if ! $running; then
    start=59092; [ "$flavour" = durable ] && start=59192
    port=$(free_port "$start"); echo "$port" > "$dir/port"
    if [ "$flavour" = durable ]; then storage="sqlite://tansu.db"; else storage="memory://tansu/"; fi
    log "starting Tansu ($flavour) on 127.0.0.1:$port"
    # Tansu reads some settings from the environment: pass only ours. It runs
    # in its own session, detached from this script's stdout (which `eval
    # "$(…)"` reads to the end).
    cd "$dir"
    env -u STORAGE_ENGINE -u LISTENER_URL -u ADVERTISED_LISTENER_URL \
        setsid nohup "$bin" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "$storage" </dev/null >"$dir/broker.log" 2>&1 &
    echo $! > "$dir/pid"
    cd "$root"
    for _ in $(seq 100); do
        answers "127.0.0.1:$port" && break
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            log "Tansu exited; see $dir/broker.log"; tail -n 20 "$dir/broker.log" >&2; exit 1
        fi
        sleep 0.2
    done
    answers "127.0.0.1:$port" || { log "Tansu did not answer on $port; see $dir/broker.log"; exit 1; }
    # Before anyone is told where the broker is.
    [ "$flavour" = durable ] && index_headers "$dir/tansu.db"
fi
printf 'export KAFKA_BROKERS=%q\n' "127.0.0.1:$port"
printf 'export TANSU_BIN=%q\n' "$bin"
