#!/usr/bin/env bash
# Writes tests/fixtures/upgrade/: a database made by three earlier builds of
# this product in turn, each on the database the one before it left, as a
# shop upgrading in place would have it, and what each build answered.
#
#   era  commit   what its build writes
#   v1   b820c28  OrderPlaced v1: one drink, no options
#   v2   01f4478  OrderPlaced v2: one drink with its options
#   v3   4d0f86c  OrderPlaced v3: and its pickup number (the parent of the
#                 commit that brought several drinks and stores, v4)
#
# Each build is the commit's own `orders` binary (built from a git worktree
# under target/upgrade-fixture, kept for the next run), running `orders all`
# (API, relay, both projections) against Kafka, with no issuer (loopback
# only). Through its HTTP API each era places orders (strings for numbers, a
# Korean name, options), staff move some, a customer cancels one, and the
# next era moves some of the earlier eras' orders on. The database runs in a
# cluster of its own (initdb), so its transaction ids are small; it is then
# dumped (pg_dump, plain SQL, gzip) to eras.sql.gz, and every order as the
# last build answered it (GET /order-ms/…/orders/{id}) to eras.json.
#
# tests/tests/suite/upgrade.rs restores it and checks the current build reads
# all of it. Run this again only to add an era; it takes a while (three debug
# builds of the workspace when none is kept).
#
#   scripts/upgrade-fixture.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
eras=(v1:b820c28 v2:01f4478 v3:4d0f86c)
work="$root/target/upgrade-fixture"
out="$root/tests/fixtures/upgrade"
mkdir -p "$work" "$out"
log() { printf 'upgrade-fixture.sh: %s\n' "$*" >&2; }

eval "$(scripts/kafka.sh memory)"
bindir=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Each era's binary.
for era in "${eras[@]}"; do
    commit=${era#*:}
    bin="$work/orders-$commit"
    [ -x "$bin" ] && continue
    src="$work/src-$commit"
    [ -d "$src" ] || git worktree add --detach --force "$src" "$commit" >/dev/null
    log "building $commit (${era%%:*})"
    (cd "$src" && SQLX_OFFLINE=true CARGO_TARGET_DIR="$work/target" cargo build -q -p services --bin orders)
    cp "$work/target/debug/orders" "$bin"
    git worktree remove --force "$src"
done

# A cluster of its own, in a scratch directory (owned by `postgres` when
# run as root, as PostgreSQL refuses to run as root).
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
scratch=$(mktemp -d)
pgdata="$scratch/data"
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    chown postgres "$scratch"
fi
as_pg "$bindir/initdb" -D "$pgdata" -U postgres -A trust --no-sync >/dev/null
pgport=$(free_port)
as_pg "$bindir/pg_ctl" -D "$pgdata" -o "-p $pgport -k $scratch -c listen_addresses=127.0.0.1 -c fsync=off" -w -l "$scratch/pg.log" start >/dev/null
orders_pid=""
cleanup() {
    [ -n "$orders_pid" ] && kill "$orders_pid" 2>/dev/null && wait "$orders_pid" 2>/dev/null
    as_pg "$bindir/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT
url="postgres://postgres@127.0.0.1:$pgport/orders"
"$bindir/psql" "postgres://postgres@127.0.0.1:$pgport/postgres" -qc "CREATE DATABASE orders" >/dev/null
topic="upgrade-fixture-$(date +%s)"
state="$work/orders.json"
echo '{}' > "$state"

for era in "${eras[@]}"; do
    name=${era%%:*} commit=${era#*:}
    port=$(free_port)
    log "era $name ($commit): orders all on 127.0.0.1:$port"
    DATABASE_URL="$url" "$work/orders-$commit" migrate >/dev/null
    env -u OIDC_ISSUER DATABASE_URL="$url" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" \
        HTTP_ADDR="127.0.0.1:$port" RUST_LOG=warn \
        "$work/orders-$commit" all >>"$work/orders-$name.log" 2>&1 &
    orders_pid=$!
    python3 "$root/scripts/upgrade-fixture-era.py" "$name" "http://127.0.0.1:$port" "$state"
    kill "$orders_pid"; wait "$orders_pid" 2>/dev/null || true; orders_pid=""
done

"$bindir/pg_dump" --no-owner --no-privileges "$url" | gzip -9n > "$out/eras.sql.gz"
cp "$state" "$out/eras.json"
log "wrote $out/eras.sql.gz ($(stat -c %s "$out/eras.sql.gz") bytes) and eras.json"
