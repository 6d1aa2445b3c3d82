-- The log's clock: the transaction ids that order the log come from the
-- cluster's transaction counter, plus a shift kept here. A database restored
-- into another cluster (pg_dump/pg_restore, a logical-replication cutover)
-- brings its stored ids but not the counter: if the new cluster's counter is
-- behind them, new events would sort before old ones and gap-safe readers
-- would stop seeing anything. `orders log-clock advance` raises the shift so
-- that every new id sorts after every stored one. It lives in the schema, not
-- in the server's files, so it works on a managed PostgreSQL too
-- (docs/adr/0010-the-log-clock-after-a-restore.md).

CREATE TABLE log_clock (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    shift       bigint      NOT NULL DEFAULT 0 CHECK (shift >= 0),
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_by  text,
    reason      text
);
INSERT INTO log_clock DEFAULT VALUES;

-- PL/pgSQL, not SQL: a SQL function in a column default is planned again at
-- every call (it cannot be inlined, having a FROM); PL/pgSQL keeps its plan.
-- Measured with pgbench, 8 clients, one-row inserts: the SQL form cost
-- 25-30 % of the insert rate, this one 5-10 % (within the noise of the run).

-- The id a writing transaction's events get: its own transaction id, shifted.
CREATE FUNCTION log_xact_id() RETURNS xid8
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s bigint;
BEGIN
    SELECT shift INTO s FROM log_clock;
    IF s = 0 THEN
        RETURN pg_current_xact_id();
    END IF;
    RETURN (pg_current_xact_id()::text::numeric + s)::text::xid8;
END
$$;

-- The gap-safe readers' horizon: the oldest transaction still running (which
-- may still write), shifted the same way.
CREATE FUNCTION log_horizon() RETURNS xid8
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s bigint;
BEGIN
    SELECT shift INTO s FROM log_clock;
    RETURN (pg_snapshot_xmin(pg_current_snapshot())::text::numeric + s)::text::xid8;
END
$$;

-- The id the next transaction will get, shifted: every stored id must be
-- below it, or new events would sort before old ones.
CREATE FUNCTION log_next_xact_id() RETURNS xid8
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s bigint;
BEGIN
    SELECT shift INTO s FROM log_clock;
    RETURN (pg_snapshot_xmax(pg_current_snapshot())::text::numeric + s)::text::xid8;
END
$$;

ALTER TABLE events ALTER COLUMN transaction_id SET DEFAULT log_xact_id();
