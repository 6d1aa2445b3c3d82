# The coffee-order system. `just` lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Checked queries compile from their offline data (.sqlx/), never against
# whatever DATABASE_URL the recipes point at; scripts/sqlx-prepare.sh
# regenerates it.
export SQLX_OFFLINE := "true"

# List the recipes.
default:
    @just --list

# Start the whole system (API, relay, projections) on 127.0.0.1:8080; starts Postgres, a Kafka broker and the local OpenID Connect provider first if needed (authentication on: `just token USER` prints a token), with the sample menu and stores (scripts/sample-menu.json, scripts/sample-stores.json) unless they are set.
run *ARGS:
    eval "$(scripts/postgres.sh)"; eval "$(scripts/kafka.sh durable)"; eval "$(scripts/oidc.sh)"; cargo build --release -p services --bin orders; target/release/orders menu set --if-empty scripts/sample-menu.json; target/release/orders stores set --if-empty scripts/sample-stores.json; target/release/orders all {{ARGS}}

# Run every test (starts Postgres first if needed).
test:
    # The process tests (signals, crashes) run the real binary: build it first.
    cargo build -p services --bin orders
    scripts/python-deps.sh
    # The tests' identity provider (the test binary starts its own, with keys of its own).
    scripts/oidc.sh install >/dev/null
    # The pages' browser tests: Debian's chromium, a Korean font, playwright-core and axe-core.
    scripts/browser.sh >/dev/null
    # Every test target but the benchmarks (`just bench` runs those; clippy
    # checks that they build), and but the targets marked `test = false`,
    # which hold no test (`--lib`/`--bins` would build them anyway). Two tests at a time, as many as the cores: the
    # fault tests check bounds (a frozen leader replaced within 10 s) that
    # four at a time on 2 cores broke (a standby that did not apply in time).
    eval "$(scripts/postgres.sh)"; eval "$(scripts/kafka.sh memory)"; scripts/drop-test-databases.sh; cargo test --workspace --tests --no-fail-fast -- --test-threads 2

# What CI runs: formatting, lints, then every test.
ci: lint test

# Fault injection under load (kill -9, frozen leaders, cancelled statements, long transactions, broker down, PostgreSQL crash), then the invariants. Try `just chaos --help`.
[positional-arguments]
chaos *ARGS:
    eval "$(scripts/kafka.sh install)"; cargo build --release -p services --bin orders -p e2e --bin chaos && target/release/chaos "$@"

# Every benchmark, each printed as a ratio to a baseline measured in the same run.
bench:
    bench/place.sh
    bench/gap-cost.sh
    bench/rebuild.sh
    just bench-kafka
    just bench-live
    just bench-peer

# Place-order throughput/latency of `orders all` under wrk against pgbench, and peak RSS.
bench-place *ARGS:
    bench/place.sh {{ARGS}}

# Write-side cost of gap safety: appends/s with and without it (pgbench, same run).
bench-gap *ARGS:
    bench/gap-cost.sh {{ARGS}}

# Rebuild throughput of the order read model against COPY of the same rows.
bench-rebuild *ARGS:
    bench/rebuild.sh {{ARGS}}

# Relay drain (100k backlog) against raw rskafka produce, and commit → delivery latency in 10 runs.
bench-kafka:
    eval "$(scripts/postgres.sh)"; eval "$(scripts/kafka.sh memory)"; cargo bench -p e2e --bench kafka_path

# Place order in-process against cqrs-es 0.5 + postgres-es 0.5 at the same concurrency (with and without an outbox row on their side).
bench-peer:
    eval "$(scripts/postgres.sh)"; cargo bench -p e2e --bench peer

# Commit → change on an open page (server-sent events) with 200 streams connected, against 1 + 1.
bench-live:
    eval "$(scripts/postgres.sh)"; eval "$(scripts/kafka.sh memory)"; cargo build --release -q -p services --bin orders && cargo bench -p e2e --bench live_path

# The lab of hosts on this machine (root: network namespaces on a bridge): `just lab up | status | down`, and the faults (`cut HOST`, `mend HOST`, `stop HOST [NAME]`); scripts/lab.sh and docs/deploy.md say more.
[positional-arguments]
lab *ARGS:
    scripts/lab.sh "$@"

# Fuzz the running API against its OpenAPI document (schemathesis): no 5xx, no schema violation.
fuzz *ARGS:
    scripts/fuzz.sh {{ARGS}}

# Check formatting and lints (clippy with warnings as errors), and that .sqlx/ is what the queries need (both in one compilation).
lint:
    cargo fmt --all -- --check
    scripts/rskafka-patched.sh check
    scripts/sqlx-prepare.sh --check --clippy

# Format the code.
fmt:
    cargo fmt --all

# Apply database migrations to DATABASE_URL (or the project-local cluster).
migrate:
    eval "$(scripts/postgres.sh)"; cargo run -p services --bin orders -- migrate

# Run any `orders` subcommand (release build) against the local database and broker.
orders *ARGS:
    eval "$(scripts/postgres.sh)"; eval "$(scripts/kafka.sh durable)"; cargo run -q --release -p services --bin orders -- {{ARGS}}

# Each projection's position, the log head and the lag.
status:
    just orders projections status

# Re-apply the log to a projection (e.g. `just replay orders --from 1200`).
replay NAME *ARGS:
    just orders projections replay {{NAME}} {{ARGS}}

# Rebuild a projection beside the live one, then switch atomically.
rebuild NAME:
    just orders projections rebuild {{NAME}}

# Open psql on the project's database.
psql:
    eval "$(scripts/postgres.sh)"; psql "$DATABASE_URL"

# Print an access token (a JWT) for USER from the local OIDC provider, e.g. `just token bob --role staff --ttl 60`.
token USER *ARGS:
    @scripts/token.sh {{quote(USER)}} {{ARGS}}

# Stop the project-local Postgres cluster, Kafka brokers and identity provider.
stop:
    scripts/oidc.sh stop
    scripts/kafka.sh stop
    scripts/postgres.sh stop
