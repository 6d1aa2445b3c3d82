#!/usr/bin/env bash
# Place-order throughput and latency of `orders all` (API + relay +
# projections, as deployed) under wrk at 8, 32 and 64 connections, against
# pgbench running the same append transaction (one event row + one outbox
# row) at the same concurrency on the same database, in the same run.
# Also peak RSS of the process idle and after the 64-connection load.
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
cargo build --release -q -p services --bin orders
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | head -1)
admin="${DATABASE_URL%/*}/postgres"
db="bench_place"
url="${DATABASE_URL%/*}/$db"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
DATABASE_URL="$url" KAFKA_TOPIC="bench-$(date +%s)" DB_MAX_CONNECTIONS=40 \
    target/release/orders all --http-addr "127.0.0.1:$port" >"$tmp/orders.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; if grep -q "\"level\":\"ERROR\"" "$tmp/orders.log"; then grep "\"level\":\"ERROR\"" "$tmp/orders.log" | tail -3 >&2; fi; rm -rf "$tmp"; psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
sleep 2
# pgbench appends to copies of the log's tables (same columns, defaults,
# indexes), so its rows never reach the service's projections.
psql "$url" -q >/dev/null <<'SQL'
CREATE TABLE bench_events (LIKE events INCLUDING ALL);
CREATE TABLE bench_outbox (LIKE outbox INCLUDING ALL);
SQL
rss() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }
idle_kib=$(rss)

cat > "$tmp/place.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"coffee_name": "today\'s coffee", "coffee_price": "5000", "coffee_qty": "3"}'
LUA
cat > "$tmp/append.sql" <<'SQL'
BEGIN;
WITH e AS (
  INSERT INTO bench_events (stream_id, version, event_id, event_type, schema_version, payload, metadata)
  VALUES (gen_random_uuid(), 1, gen_random_uuid(), 'OrderPlaced', 1,
          '{"order_id": "x", "user_id": "USER0001", "coffee_name": "today''s coffee", "coffee_price": 5000, "coffee_qty": 3, "total_price": 15000}',
          '{"who": "customer:USER0001"}')
  RETURNING position, stream_id)
INSERT INTO bench_outbox (position, stream_id) SELECT position, stream_id FROM e;
COMMIT;
SQL

printf '\n%-6s %14s %14s %8s %12s\n' conns "orders req/s" "pgbench tps" ratio "orders p99"
for c in 8 32 64; do
    out=$(wrk -t2 -c"$c" -d"${seconds}s" --latency -s "$tmp/place.lua" "http://127.0.0.1:$port/order-ms/USER0001/orders")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    tps=$("$bindir/pgbench" -n -f "$tmp/append.sql" -c "$c" -j 2 -T "$seconds" "$url" 2>/dev/null | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
    printf '%-6s %14.0f %14.0f %8.2f %12s%s\n' "$c" "$rps" "$tps" "$(awk -v a="$rps" -v b="$tps" 'BEGIN{print a/b}')" "$p99" \
        "${non2xx:+   ($non2xx non-2xx answers)}"
done
loaded_kib=$(rss)
printf '\npeak RSS of orders all: idle %.1f MiB, after the 64-connection load %.1f MiB\n' \
    "$(awk -v k="$idle_kib" 'BEGIN{print k/1024}')" "$(awk -v k="$loaded_kib" 'BEGIN{print k/1024}')"
