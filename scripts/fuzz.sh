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
eval "$(scripts/oidc.sh)"
cargo build -q -p services --bin orders

db="fuzz_$(date +%s)"
admin="${DATABASE_URL%/*}/postgres"
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
# As deployed: authentication on (the local provider), but no rate limit:
# the fuzzer sends hundreds of requests a second as one user.
DATABASE_URL="${DATABASE_URL%/*}/$db" KAFKA_TOPIC="fuzz-$db" \
    RATE_LIMIT_PER_SECOND=0 RATE_LIMIT_PEER_PER_SECOND=0 \
    target/debug/orders all --http-addr "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
    rm -f "$log" "${config:-}"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.2
done
# One caller for every operation: the user `fuzz`, with the staff role (the
# delivery side is staff's); the order-ms paths are pinned to that user,
# since another user's are 404 by design.
auth="Authorization: Bearer $(scripts/token.sh fuzz --role staff)"
# /metrics is the operators': it gets an operator's token.
operator="Bearer $(scripts/token.sh fuzz-ops --role operator)"

# Seed orders so reads and moves have something to find: one the fuzzer may
# cancel, one it may move through the kitchen. Schemathesis is told their
# ids (a config file of this run's own), so those operations reach the
# service's logic instead of answering 404 to every generated id; and it
# sends `If-Match: *` on them: it cannot know an order's version, and a
# generated one is answered 412 (tests/tests/concurrency.rs covers that).
seed() {
    curl -sf -X POST "http://127.0.0.1:$port/order-ms/fuzz/orders" -H "$auth" -H 'Content-Type: application/json' \
        -d '{"coffee_name": "latte", "coffee_price": "4500"}' |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["order_id"])'
}
to_cancel=$(seed)
to_move=$(seed)
config=$(mktemp --suffix .toml)
cat >"$config" <<TOML
[[operations]]
include-path = ["/metrics"]
headers = { Authorization = "$operator" }

[[operations]]
include-path = ["/order-ms/{user_id}/orders"]
parameters = { "path.user_id" = "fuzz" }

[[operations]]
include-path = ["/order-ms/{user_id}/orders/{order_id}", "/order-ms/{user_id}/orders/{order_id}/cancel"]
parameters = { "path.user_id" = "fuzz", "path.order_id" = "$to_cancel", "header.If-Match" = "*" }

[[operations]]
include-path = ["/delivery-ms/{user_id}/{order_id}", "/delivery-ms/{user_id}/{order_id}/status"]
parameters = { "path.user_id" = "fuzz", "path.order_id" = "$to_move", "header.If-Match" = "*" }
TOML
# The delivery side learns of the orders through Kafka.
for _ in $(seq 50); do
    curl -sf -H "$auth" "http://127.0.0.1:$port/delivery-ms/fuzz/$to_move" >/dev/null && break
    sleep 0.2
done

# not_a_server_error: no 5xx. response_schema_violation,
# status_code_conformance, content_type_conformance, response_headers_conformance:
# every answer is one the document describes.
st --config-file "$config" run "http://127.0.0.1:$port/openapi.json" -H "$auth" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "${FUZZ_EXAMPLES:-50}" \
    "$@"
