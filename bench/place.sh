#!/usr/bin/env bash
# Place-order throughput and latency under wrk at 1, 8, 32 and 64 connections,
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

# wrk prints 812.00us, 40.30ms or 1.02s: milliseconds.
ms() { echo "$1" | awk '/us$/ {print $0/1000; next} /ms$/ {print $0+0; next} /s$/ {print $0*1000}'; }

# One row: wrk placing orders on `conns` connections, then pgbench appending
# the same event on as many, each for `seconds`. Sets last_* for the targets.
row() { # label conns [lines: 1 or 3]
    local out bench rps p50 p99 non2xx tps lat n=${3:-1} threads=$(( $2 < 2 ? $2 : 2 ))
    out=$(wrk -t"$threads" -c"$2" -d"${seconds}s" --latency -s "$tmp/place$n.lua" "http://127.0.0.1:$port/order-ms/USER0001/orders")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    bench=$("$bindir/pgbench" -n -M prepared -f "$tmp/append$n.sql" -c "$2" -j "$threads" -T "$seconds" "$url" 2>/dev/null)
    tps=$(echo "$bench" | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
    lat=$(echo "$bench" | sed -nE 's/^latency average = ([0-9.]+) ms/\1/p')
    last_rps=$rps last_p50_ms=$(ms "$p50") last_p99_ms=$(ms "$p99") last_pg_ms=$lat
    last_ratio=$(awk -v a="$rps" -v b="$tps" 'BEGIN{print a/b}')
    printf '%-11s %5s %12.0f %12.0f %7.2f %10s %10s %12s%s\n' "$1" "$2" "$rps" "$tps" "$last_ratio" "$p50" "$p99" "${lat} ms" \
        "${non2xx:+   ($non2xx non-2xx answers)}"
}

# The place-order stages' histograms (`/metrics`, an operator's token).
operator=$(scripts/token.sh bench-ops --role operator --ttl 3600)
scrape() { curl -sf -H "Authorization: Bearer $operator" "http://127.0.0.1:$port/metrics" \
    | grep '^place_order_stage_seconds_bucket' > "$1" || true; }
# Each stage's p50 and p99 between two scrapes (the upper bound of the
# bucket the quantile falls in).
stage_table() {
    python3 - "$1" "$2" <<'PY'
import re, sys
def read(path):
    counts = {}
    for line in open(path):
        m = re.match(r'place_order_stage_seconds_bucket\{(.*)\} (\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        counts[(labels["stage"], labels["le"])] = float(m.group(2))
    return counts
before, after = read(sys.argv[1]), read(sys.argv[2])
stages = {}
for (stage, le), n in after.items():
    stages.setdefault(stage, []).append((float("inf") if le == "+Inf" else float(le), n - before.get((stage, le), 0)))
print("stage        requests   p50 <=      p99 <=")
for stage in ["auth", "idempotency", "menu", "draw", "append"]:
    buckets = sorted(stages.get(stage, []))
    if not buckets or buckets[-1][1] == 0:
        continue
    total = buckets[-1][1]
    def q(f):
        le = next(le for le, n in buckets if n >= f * total)
        return "inf" if le == float("inf") else f"{le * 1000:g} ms"
    print(f"{stage:<12} {total:>8.0f}   {q(0.5):>9}   {q(0.99):>9}")
PY
}

# Each target with its same-run figures: "holds" or "MISSED".
verdicts=()
judge() { # holds(1/0) text
    verdicts+=("$(printf 'target: %s: %s' "$2" "$([ "$1" = 1 ] && echo holds || echo MISSED)")")
}
at_least() { awk -v a="$1" -v b="$2" 'BEGIN{print (a >= b) ? 1 : 0}'; }
at_most() { awk -v a="$1" -v b="$2" 'BEGIN{print (a <= b) ? 1 : 0}'; }

printf '\nplace order: POST /order-ms/USER0001/orders (wrk) against pgbench running the same append, at each concurrency\n'
printf '(authentication on; the row marked open runs without an issuer: the cost of checking a token per request;\n'
printf ' serve 3 places orders of three drinks, pgbench appending their event; pgbench lat = its latency per transaction)\n'
printf '%-11s %5s %12s %12s %7s %10s %10s %12s\n' orders conns "orders req/s" "pgbench tps" ratio "p50" "p99" "pgbench lat"
start_orders all auth
idle_kib=$(rss)
payload_of 1
payload_of 3
for c in 1 8 32 64; do
    row all "$c"
    [ "$c" = 1 ] || judge "$(at_least "$last_ratio" 0.6)" "orders all, $c connections: >= 0.60 of pgbench ($(printf %.2f "$last_ratio"))"
done
loaded_kib=$(rss)
stop_orders
start_orders serve auth
for c in 1 8 32 64; do
    [ "$c" = 64 ] && scrape "$tmp/stages-before"
    row serve "$c"
    [ "$c" = 64 ] && scrape "$tmp/stages-after"
    if [ "$c" = 1 ]; then
        judge "$(at_most "$last_p50_ms" "$(awk -v l="$last_pg_ms" 'BEGIN{print 2*l}')")" \
            "orders serve, 1 connection: p50 <= 2x pgbench's latency per transaction ($last_p50_ms ms against $last_pg_ms ms)"
    else
        judge "$(at_least "$last_ratio" 0.8)" "orders serve, $c connections: >= 0.80 of pgbench ($(printf %.2f "$last_ratio"))"
    fi
done
judge "$(at_most "$last_p99_ms" 25)" "orders serve, 64 connections: p99 <= 25 ms ($last_p99_ms ms)"
one_rps=$last_rps one_ratio=$last_ratio
row "serve 3" 64 3
three_rps=$last_rps three_ratio=$last_ratio
stop_orders
start_orders serve open
row "serve open" 64
stop_orders
cost=$(awk -v a="$one_rps" -v b="$three_rps" 'BEGIN{printf "%.2f", a / b}')
judge "$(at_most "$cost" 1.2)" "a three-drink order costs <= 1.2 of a one-drink order (orders serve, 64 connections): $cost (of pgbench: one $(printf %.2f "$one_ratio"), three $(printf %.2f "$three_ratio"))"
printf '\nwhere a place-order waits (orders serve, 64 connections, from its /metrics):\n'
stage_table "$tmp/stages-before" "$tmp/stages-after"
printf '%s\n' "${verdicts[@]}"
printf '\npeak RSS of orders all: idle %.1f MiB, after the 64-connection load %.1f MiB\n' \
    "$(awk -v k="$idle_kib" 'BEGIN{print k/1024}')" "$(awk -v k="$loaded_kib" 'BEGIN{print k/1024}')"
