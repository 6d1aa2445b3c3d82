-- The event log: one row per event, append-only, globally ordered by position.

CREATE TABLE events (
    -- Global order of insertion. Positions are allocated at insert time, so
    -- they can commit out of order: readers must not treat a position
    -- checkpoint alone as "everything before this is visible" (see
    -- transaction_id below and docs/adr/0001-gap-safe-log-reading.md).
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       uuid        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL CHECK (event_type <> ''),
    schema_version  smallint    NOT NULL CHECK (schema_version > 0),
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The writing transaction. Readers compare it with pg_snapshot_xmin() to
    -- know which transactions can still commit below what they have seen.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- Optimistic concurrency: two writers of the same version cannot both commit.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- Gap-safe readers scan in (transaction_id, position) order.
CREATE INDEX events_transaction_position_idx ON events (transaction_id, position);

-- Append-only, enforced by the database itself: no role that writes through
-- this schema can change or remove history.
CREATE FUNCTION events_reject_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % on events is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
