#!/usr/bin/env bash
# Rebuild throughput of the order read model, against the machine's own limit
# measured in the same run: COPY of the same rows out of Postgres (reading the
# log can't be faster than that).
#
# Usage: bench/rebuild.sh [orders=490000]   (≈ 2.04 events per order: 1M events)
set -euo pipefail
cd "$(dirname "$0")/.."
orders=${1:-490000}
eval "$(scripts/postgres.sh)"
cargo build --release -q -p services --bin orders
bin=target/release/orders
admin="${DATABASE_URL%/*}/postgres"
db="bench_rebuild"
url="${DATABASE_URL%/*}/$db"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
DATABASE_URL="$url" "$bin" migrate >/dev/null
echo "seeding $orders orders..." >&2
psql "$url" -q -v orders="$orders" -f bench/seed-events.sql
psql "$url" -qc "VACUUM ANALYZE events" >/dev/null
events=$(psql "$url" -Atc "SELECT count(*) FROM events")

now() { date +%s.%N; }
t0=$(now)
psql "$url" -qc "\\copy (SELECT position, stream_id, version, event_id, event_type, schema_version, payload, metadata, recorded_at, transaction_id FROM events ORDER BY transaction_id, position) TO '/dev/null'"
t1=$(now)
DATABASE_URL="$url" "$bin" projections rebuild orders >&2
t2=$(now)

awk -v n="$events" -v c="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" -v r="$(awk -v a="$t1" -v b="$t2" 'BEGIN{print b-a}')" 'BEGIN {
    printf "\n%-34s %10s %8s %14s\n", "rebuild of " n " events", "seconds", "events/s", "ratio to COPY"
    printf "%-34s %10.2f %8.0f %14s\n", "baseline: COPY of the same rows", c, n / c, "1.00"
    printf "%-34s %10.2f %8.0f %14.2f\n", "orders projections rebuild", r, n / r, c / r
    printf "target: rebuild >= 0.50 of COPY: %.2f, %s\n", c / r, (c / r >= 0.5 ? "holds" : "MISSED")
}'
gen=$(psql "$url" -Atc "SELECT active_generation FROM projections WHERE name = 'orders'")
echo "rebuilt table order_view_g$gen: $(psql "$url" -Atc "SELECT pg_size_pretty(pg_table_size('order_view_g$gen')) || ' heap, ' || pg_size_pretty(pg_indexes_size('order_view_g$gen')) || ' indexes'")"
psql "$admin" -qc "DROP DATABASE $db" >/dev/null
