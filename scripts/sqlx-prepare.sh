#!/usr/bin/env bash
# Regenerates `.sqlx/`, the offline data of the compile-time checked queries
# (`sqlx::query!` and friends), so that a fresh build needs no database: what
# `cargo sqlx prepare --workspace` does, without installing sqlx-cli. The
# macros check every query against a scratch database migrated from
# `migrations/` and, with SQLX_OFFLINE_DIR set, write what they learned.
#
#   scripts/sqlx-prepare.sh          rewrite .sqlx/
#   scripts/sqlx-prepare.sh --check  fail if .sqlx/ is not what the queries need
#   scripts/sqlx-prepare.sh --check --clippy
#                                    the same, in the same compilation as
#                                    `cargo clippy … -D warnings` (what `just
#                                    lint` runs: one pass over the workspace
#                                    instead of two)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
eval "$(scripts/postgres.sh)"
admin="${DATABASE_URL%/*}/postgres"
db="sqlx_prepare_$$"
out=$(mktemp -d)
psql "$admin" -qc "CREATE DATABASE $db" >/dev/null
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; rm -rf "$out"' EXIT
url="${DATABASE_URL%/*}/$db"
for migration in migrations/*.sql; do
    psql "$url" -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done
# The macros run when the crates that use them compile: force it.
touch services/src/lib.rs projections/src/lib.rs projections/infra/src/lib.rs
if [[ "${2:-}" == "--clippy" ]]; then
    DATABASE_URL="$url" SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" \
        cargo clippy --workspace --all-targets -- -D warnings
else
    DATABASE_URL="$url" SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" \
        cargo check -q --workspace --all-targets
fi
if [[ "${1:-}" == "--check" ]]; then
    if ! diff -rq "$out" .sqlx >/dev/null 2>&1; then
        echo "sqlx-prepare.sh: .sqlx/ is stale: run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
        diff -rq "$out" .sqlx >&2 || true
        rm -rf "$out"
        exit 1
    fi
    rm -rf "$out"
    echo "sqlx-prepare.sh: .sqlx/ matches the queries"
else
    rm -rf .sqlx
    mv "$out" .sqlx
    echo "sqlx-prepare.sh: wrote $(ls .sqlx | wc -l) queries to .sqlx/"
fi
