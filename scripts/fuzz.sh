#!/usr/bin/env bash
# Fuzzes the running API against its own OpenAPI document with schemathesis
# (PyPI): no 5xx, no response that violates the schema. Starts `orders all`
# on a free port with a database and a topic of its own, runs schemathesis,
# stops the service. Extra arguments go to schemathesis.
#
# Usage: scripts/fuzz.sh [--max-examples N] ...
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH"
if ! command -v st >/dev/null 2>&1; then
    echo "fuzz.sh: installing schemathesis (PyPI)" >&2
    python3 -m pip install --quiet --user schemathesis >&2
fi
eval "$(scripts/postgres.sh)"
eval "$(scripts/kafka.sh memory)"
cargo build -q -p services --bin orders

db="fuzz_$(date +%s)"
admin="${DATABASE_URL%/*}/postgres"
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
DATABASE_URL="${DATABASE_URL%/*}/$db" KAFKA_TOPIC="fuzz-$db" \
    target/debug/orders all --http-addr "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.2
done
# Seed one order so reads have something to find.
curl -sf -X POST "http://127.0.0.1:$port/order-ms/fuzz/orders" -H 'Content-Type: application/json' \
    -d '{"coffee_name": "latte", "coffee_price": "4500"}' >/dev/null

# not_a_server_error: no 5xx. response_schema_violation,
# status_code_conformance, content_type_conformance, response_headers_conformance:
# every answer is one the document describes.
st run "http://127.0.0.1:$port/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "${FUZZ_EXAMPLES:-50}" \
    "$@"
