-- The transactional outbox: one row per event still to be published to Kafka.
-- Written in the same transaction as the event; the relay deletes a row only
-- after the broker acknowledged it.

CREATE TABLE outbox (
    position    bigint      PRIMARY KEY REFERENCES events (position),
    -- The Kafka key: every event of one order goes to one partition, in order.
    stream_id   uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Wake the relay as soon as a transaction with outbox rows commits
-- (NOTIFY is delivered at commit, and only if it commits).
CREATE FUNCTION outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify_after_insert
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
