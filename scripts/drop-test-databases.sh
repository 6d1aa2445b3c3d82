#!/usr/bin/env bash
# Drops the per-test databases earlier test runs left behind (each test makes
# its own `test_…` database and drops it when it passes; a failing test's is
# kept for the post-mortem until the next run).
set -euo pipefail
: "${DATABASE_URL:?DATABASE_URL must be set}"
admin="${DATABASE_URL%/*}/postgres"
psql "$admin" -Atqc "select datname from pg_database where datname like 'test\_%'" | while read -r db; do
    psql "$admin" -qc "drop database if exists \"$db\" with (force)" >/dev/null
done
