#!/usr/bin/env bash
# Is commit → delivery latency bounded by Nagle's algorithm on rskafka's
# broker sockets? rskafka 0.6 writes every request as two writes (the 4-byte
# length, then the body) on a socket without TCP_NODELAY: the body waits for
# the broker's delayed ACK of the length (40 ms on Linux) whenever the
# connection is in delayed-ACK mode.
#
# A/B in one run: builds the Kafka benchmark against rskafka with
# bench/rskafka-nodelay.patch (TCP_NODELAY when RSKAFKA_NODELAY is set; the
# copy lives under target/, the product is untouched), then runs the
# commit → delivery measurement alternately without and with it.
#
# Usage: bench/nodelay-ab.sh [pairs=6]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pairs=${1:-6}
eval "$(scripts/postgres.sh)"
eval "$(scripts/kafka.sh memory)"

src=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys, os
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "rskafka":
        print(os.path.dirname(p["manifest_path"])); break')
[ -d "$src" ] || { echo "nodelay-ab: rskafka's source not found (cargo fetch first)" >&2; exit 1; }
patched=$root/target/nodelay-ab/rskafka
rm -rf "$patched" && mkdir -p "$(dirname "$patched")" && cp -r "$src" "$patched"
patch -s -d "$patched" -p1 < bench/rskafka-nodelay.patch

# Patching a dependency rewrites Cargo.lock; the product's lock file is put back.
cp Cargo.lock "$root/target/nodelay-ab/Cargo.lock.orig"
trap 'cp "$root/target/nodelay-ab/Cargo.lock.orig" "$root/Cargo.lock"' EXIT
export CARGO_TARGET_DIR=$root/target/nodelay-ab/target
bin=$(cargo bench -q --config "patch.crates-io.rskafka.path=\"$patched\"" -p e2e --bench kafka_path \
    --no-run --message-format json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kafka_path" and m.get("executable"):
        print(m["executable"])')
cd tests

run() { # $1: 0 or 1 (TCP_NODELAY)
    if [ "$1" = 1 ]; then RSKAFKA_NODELAY=1 "$bin" --bench --latency-only; else env -u RSKAFKA_NODELAY "$bin" --bench --latency-only; fi |
        awk '/p50/ { print $2, $5 }'
}
printf '%-6s %-28s %-28s\n' pair "rskafka as released" "with TCP_NODELAY"
printf '%-6s %-28s %-28s\n' "" "p50 / p99 ms" "p50 / p99 ms"
slow_a=0; slow_b=0
for i in $(seq "$pairs"); do
    read -r a50 a99 < <(run 0)
    read -r b50 b99 < <(run 1)
    printf '%-6s %-28s %-28s\n' "$i" "$a50 / $a99" "$b50 / $b99"
    awk -v x="$a99" 'BEGIN { exit !(x > 100) }' && slow_a=$((slow_a + 1))
    awk -v x="$b99" 'BEGIN { exit !(x > 100) }' && slow_b=$((slow_b + 1))
done
echo "runs with p99 > 100 ms: $slow_a of $pairs as released, $slow_b of $pairs with TCP_NODELAY"
