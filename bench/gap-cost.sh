#!/usr/bin/env bash
# The write-side cost of gap safety (docs/adr/0004-gap-safe-log-reading.md).
#
# pgbench runs the append transaction (one event row + one outbox row) against
# three copies of the event table, in one scratch database, interleaved so the
# machine's noise hits all of them alike:
#   plain       - no transaction id column (what a naive reader needs)
#   xid         - transaction_id xid8 DEFAULT pg_current_xact_id() + index on
#                 (transaction_id, position): what this project does
#   serialised  - no xid column, every append takes one advisory lock first
#                 (the "serialise position assignment" alternative)
# and prints appends/s and each ratio to `plain`.
#
# Usage: bench/gap-cost.sh [clients=8] [seconds=10] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-8}; seconds=${2:-10}; rounds=${3:-3}
eval "$(scripts/postgres.sh)"
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | head -1)
admin="${DATABASE_URL%/*}/postgres"
db="bench_gap_cost"
url="${DATABASE_URL%/*}/$db"
psql "$admin" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null

psql "$url" -q >/dev/null <<'SQL'
CREATE TABLE ev_plain (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id uuid NOT NULL, version integer NOT NULL, event_id uuid NOT NULL,
    event_type text NOT NULL, schema_version smallint NOT NULL, payload jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}', recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, version), UNIQUE (event_id));
CREATE TABLE ev_xid (LIKE ev_plain INCLUDING ALL,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id());
CREATE INDEX ON ev_xid (transaction_id, position);
CREATE TABLE ev_serialised (LIKE ev_plain INCLUDING ALL);
CREATE TABLE ob_plain (position bigint PRIMARY KEY, stream_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE ob_xid (LIKE ob_plain INCLUDING ALL);
CREATE TABLE ob_serialised (LIKE ob_plain INCLUDING ALL);
SQL

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for variant in plain xid serialised; do
    lock=""
    [ "$variant" = serialised ] && lock="SELECT pg_advisory_xact_lock(42);"
    cat > "$tmp/$variant.sql" <<SQL
BEGIN;
$lock
WITH e AS (
  INSERT INTO ev_$variant (stream_id, version, event_id, event_type, schema_version, payload)
  VALUES (gen_random_uuid(), 1, gen_random_uuid(), 'OrderPlaced', 1,
          '{"order_id": "x", "user_id": "USER0001", "coffee_name": "latte", "coffee_price": 4500, "coffee_qty": 2, "total_price": 9000}')
  RETURNING position, stream_id)
INSERT INTO ob_$variant (position, stream_id) SELECT position, stream_id FROM e;
COMMIT;
SQL
done

declare -A total
for round in $(seq "$rounds"); do
    for variant in plain xid serialised; do
        tps=$("$bindir/pgbench" -n -f "$tmp/$variant.sql" -c "$clients" -j 2 -T "$seconds" "$url" 2>/dev/null \
              | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
        printf 'round %s  %-10s %10.0f appends/s\n' "$round" "$variant" "$tps" >&2
        total[$variant]=$(awk -v a="${total[$variant]:-0}" -v b="$tps" 'BEGIN { print a + b }')
    done
done
plain=$(awk -v a="${total[plain]}" -v n="$rounds" 'BEGIN { print a / n }')
printf '\n%-12s %12s %8s   (%s clients, %s x %ss each)\n' variant appends/s ratio "$clients" "$rounds" "$seconds"
for variant in plain xid serialised; do
    mean=$(awk -v a="${total[$variant]}" -v n="$rounds" 'BEGIN { print a / n }')
    printf '%-12s %12.0f %8.2f\n' "$variant" "$mean" "$(awk -v a="$mean" -v b="$plain" 'BEGIN { print a / b }')"
done
psql "$admin" -qc "DROP DATABASE $db" >/dev/null
