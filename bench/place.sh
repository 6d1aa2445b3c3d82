#!/usr/bin/env bash
# Place-order throughput and latency under wrk at 8, 32 and 64 connections,
# against pgbench running the very statement the service's append runs (one
# event row, one outbox row, the idempotency CTE; prepared, as sqlx runs it)
# at the same concurrency on the same database, in the same run.
#
# Two ways to run the service:
#   all    `orders all`: API, relay and both projections in one process, as
#          `just run` deploys it (the pipeline's work shares the 2 cores);
#   serve  `orders serve`: the API alone (relay and projections elsewhere).
# Both as deployed, with authentication on (a token from the local OpenID
# Connect provider on every request); `serve open` once more without an
# issuer, so the cost of checking tokens shows beside it.
# Also peak RSS of `orders all`, idle and after the 64-connection load, and
# the cost of an order of three drinks (`items`) beside an order of one, each
# against pgbench appending that very event (its payload as the service
# wrote it).
#
# Usage: bench/place.sh [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "place.sh: installing wrk (Debian package)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
    else
        echo "place.sh: wrk is missing; install it with: sudo apt-get install -y wrk" >&2; exit 1
    fi
fi
eval "$(scripts/postgres.sh)"
eval "$(scripts/kafka.sh memory)"
eval "$(scripts/oidc.sh)"
cargo build --release -q -p services --bin orders
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | head -1)
admin="${DATABASE_URL%/*}/postgres"
db="bench_place"
url="${DATABASE_URL%/*}/$db"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
DATABASE_URL="$url" target/release/orders migrate >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
pid=""
stop_orders() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi
    if grep -q '"level":"ERROR"' "$tmp/orders.log" 2>/dev/null; then grep '"level":"ERROR"' "$tmp/orders.log" | tail -3 >&2; fi
}
trap 'stop_orders; rm -rf "$tmp"; psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true' EXIT
start_orders() { # all|serve auth|open
    # As deployed, authentication on (the local provider); `open` runs it
    # without an issuer, for the cost of checking tokens. No rate limit: wrk
    # is one caller.
    local issuer=""
    [ "$2" = auth ] && issuer="$OIDC_ISSUER"
    env -u OIDC_ISSUER ${issuer:+OIDC_ISSUER="$issuer"} RATE_LIMIT_PER_SECOND=0 RATE_LIMIT_PEER_PER_SECOND=0 \
        DATABASE_URL="$url" KAFKA_TOPIC="bench-$(date +%s%N)" DB_WRITE_CONNECTIONS=40 \
        target/release/orders "$1" --http-addr "127.0.0.1:$port" >>"$tmp/orders.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    sleep 2
}
rss() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }

# pgbench appends to copies of the tables (same columns, defaults, indexes),
# so its rows never reach the service's projections. The statement is the
# one in services/src/store/mod.rs, values inlined as pgbench cannot bind
# arrays; no idempotency key, as wrk sends none.
psql "$url" -q >/dev/null <<'SQL'
CREATE TABLE bench_events (LIKE events INCLUDING ALL);
CREATE TABLE bench_outbox (LIKE outbox INCLUDING ALL);
CREATE TABLE bench_keys (LIKE idempotency_keys INCLUDING ALL);
SQL
# The append, for an event payload the service wrote: PAYLOAD and VERSION
# are filled in by payload_of once the service has placed one such order.
cat > "$tmp/append.template" <<'SQL'
WITH appended AS (
    INSERT INTO bench_events (stream_id, version, event_id, event_type, schema_version, payload, metadata)
    SELECT s.id, v.version, v.event_id, v.event_type, v.schema_version, v.payload,
           '{"who": "customer USER0001", "request_id": "b3a1c6e2-5a7e-4d55-9a43-1f0f7e3c2d11"}'::jsonb
      FROM (SELECT gen_random_uuid() AS id) s,
           UNNEST(ARRAY[1], ARRAY[gen_random_uuid()], ARRAY['OrderPlaced'], ARRAY[VERSION::smallint],
                  ARRAY[$payload$PAYLOAD$payload$::jsonb])
           AS v(version, event_id, event_type, schema_version, payload)
     WHERE (SELECT coalesce(max(version), 0) FROM bench_events WHERE stream_id = s.id) = 0
    RETURNING position, stream_id, version, recorded_at, transaction_id),
outboxed AS (
    INSERT INTO bench_outbox (position, stream_id, transaction_id)
    SELECT position, stream_id, transaction_id FROM appended),
keyed AS (
    INSERT INTO bench_keys (scope, key, fingerprint, stream_id, version, log_position)
    SELECT NULL, NULL, NULL, (array_agg(stream_id))[1], max(version), max(position) FROM appended
     WHERE NULL::text IS NOT NULL
    HAVING count(*) > 0)
SELECT position, version, recorded_at FROM appended ORDER BY version;
SQL
# The original clients' single drink, and an order of three drinks.
one="{\"coffee_name\": \"today's coffee\", \"coffee_price\": \"5000\", \"coffee_qty\": \"3\"}"
three='{"store_id": "main", "items": [{"coffee_name": "americano", "coffee_price": 4500, "coffee_qty": 2, "options": {"temperature": "iced"}}, {"coffee_name": "latte", "coffee_price": 5500, "coffee_qty": 1, "options": {"size": "large"}}, {"coffee_name": "cold brew", "coffee_price": 5000, "coffee_qty": 1, "options": {"temperature": "iced", "size": "regular"}}]}'
token=$(scripts/token.sh USER0001 --ttl 3600)
for n in 1 3; do
    body=$one; [ "$n" = 3 ] && body=$three
    cat > "$tmp/place$n.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
wrk.body = [[$body]]
LUA
done

# pgbench's append of the event the service wrote for a body (1 or 3): one
# such order placed through the API, its payload read back from the log.
payload_of() {
    local n=$1 body id
    body=$one; [ "$n" = 3 ] && body=$three
    id=$(curl -sf -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body" \
        "http://127.0.0.1:$port/order-ms/USER0001/orders" | python3 -c 'import json,sys; print(json.load(sys.stdin)["order_id"])')
    psql "$url" -Atq -c "SELECT schema_version || ' ' || payload::text FROM events WHERE stream_id = '$id' AND version = 1" \
        | python3 -c '
import sys
version, payload = sys.stdin.read().strip().split(" ", 1)
sql = open(sys.argv[1]).read().replace("VERSION", version).replace("PAYLOAD", payload)
open(sys.argv[2], "w").write(sql)' "$tmp/append.template" "$tmp/append$n.sql"
}

row() { # label conns [lines: 1 or 3]
    local out rps p99 non2xx tps n=${3:-1}
    out=$(wrk -t2 -c"$2" -d"${seconds}s" --latency -s "$tmp/place$n.lua" "http://127.0.0.1:$port/order-ms/USER0001/orders")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    last_rps=$rps
    tps=$("$bindir/pgbench" -n -M prepared -f "$tmp/append$n.sql" -c "$2" -j 2 -T "$seconds" "$url" 2>/dev/null | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
    last_ratio=$(awk -v a="$rps" -v b="$tps" 'BEGIN{print a/b}')
    # wrk prints 812.00us, 40.30ms or 1.02s.
    last_p99_ms=$(echo "$p99" | awk '/us$/ {print $0/1000; next} /ms$/ {print $0+0; next} /s$/ {print $0*1000}')
    printf '%-11s %-6s %14.0f %14.0f %8.2f %12s%s\n' "$1" "$2" "$rps" "$tps" "$last_ratio" "$p99" \
        "${non2xx:+   ($non2xx non-2xx answers)}"
}

printf '\nplace order: POST /order-ms/USER0001/orders (wrk) against pgbench running the same append\n'
printf '(the rows marked open run without an issuer: the cost of checking a token per request;\n'
printf ' serve 3 places orders of three drinks, pgbench appending their event)\n'
printf '%-11s %-6s %14s %14s %8s %12s\n' orders conns "orders req/s" "pgbench tps" ratio "orders p99"
start_orders all auth
idle_kib=$(rss)
payload_of 1
payload_of 3
for c in 8 32 64; do row all "$c"; done
loaded_kib=$(rss)
stop_orders
start_orders serve auth
row serve 64
serve_ratio=$last_ratio serve_p99=$last_p99_ms one_rps=$last_rps one_ratio=$last_ratio
row "serve 3" 64 3
three_rps=$last_rps three_ratio=$last_ratio
stop_orders
start_orders serve open
row "serve open" 64
stop_orders
awk -v r="$serve_ratio" -v p="$serve_p99" 'BEGIN {
    printf "target: orders serve, 64 connections, authentication on: >= 0.80 of pgbench (%.2f, %s), p99 <= 25 ms (%.1f ms, %s)\n",
        r, (r >= 0.8 ? "holds" : "MISSED"), p, (p <= 25 ? "holds" : "MISSED")
}'
awk -v a="$one_rps" -v b="$three_rps" -v r1="$one_ratio" -v r3="$three_ratio" 'BEGIN {
    c = a / b
    printf "target: a three-drink order costs <= 1.2 of a one-drink order (orders serve, 64 connections): %.2f, %s (of pgbench: one %.2f, three %.2f)\n",
        c, (c <= 1.2 ? "holds" : "MISSED"), r1, r3
}'
printf '\npeak RSS of orders all: idle %.1f MiB, after the 64-connection load %.1f MiB\n' \
    "$(awk -v k="$idle_kib" 'BEGIN{print k/1024}')" "$(awk -v k="$loaded_kib" 'BEGIN{print k/1024}')"
