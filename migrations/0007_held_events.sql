-- Events a projection cannot apply yet, and the operators' decisions about
-- them (docs/adr/0009-events-this-build-cannot-read.md).
--
-- A projection never skips an event silently and never stops for one: an
-- event it cannot read (an unknown type or a schema version from a newer
-- build), or one that would move a read-model row that does not exist, holds
-- back its order. That event and every later event of the same order wait
-- here, with the wire form needed to apply them later, while the projection
-- goes on with every other order. A build that can read them releases them;
-- an operator may park one instead (below), and the order's later events
-- then apply.

CREATE TABLE projection_held (
    projection      text        NOT NULL REFERENCES projections (name),
    generation      integer     NOT NULL CHECK (generation > 0),
    stream_id       uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    -- The order's version of this event: held events apply in this order.
    version         bigint      NOT NULL,
    -- Where it was read: 'log position N' or 'TOPIC/PARTITION/OFFSET'.
    source          text        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    -- The event as it travels (domain::StoredEvent), to decode again later.
    envelope        jsonb       NOT NULL,
    reason          text        NOT NULL,
    held_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection, generation, event_id)
);

CREATE INDEX projection_held_stream_idx
    ON projection_held (projection, generation, stream_id, version);

-- An operator's decision that a projection shall pass over one event it
-- cannot read. Kept for every generation (a rebuild honours it) and never
-- deleted: the audit trail says who decided, as which database role and
-- operating-system user, when, and why.
CREATE TABLE projection_parked (
    projection      text        NOT NULL REFERENCES projections (name),
    event_id        uuid        NOT NULL,
    stream_id       uuid        NOT NULL,
    source          text        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    held_reason     text        NOT NULL,
    reason          text        NOT NULL CHECK (length(btrim(reason)) > 0),
    database_role   text        NOT NULL DEFAULT current_user,
    os_user         text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection, event_id)
);

-- A standby that can read what the leader holds back asks the leader to hand
-- its lock over (a rolling deploy: the new build waits behind the old one).
CREATE TABLE projection_handover (
    projection    text        PRIMARY KEY REFERENCES projections (name),
    requested_by  text        NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Records from the topic that are not order events at all (a foreign
-- producer, a corrupt record): kept with their raw bytes, never applied.
CREATE TABLE delivery.dead_letters (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    key          bytea,
    value        bytea,
    reason       text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, partition, "offset")
);

-- Events the relay could not publish because their record is larger than a
-- produce request may be (KAFKA_MAX_REQUEST_BYTES): taken out of the outbox
-- so they do not block their partition, kept here with the reason.
CREATE TABLE outbox_dead_letters (
    position    bigint      PRIMARY KEY REFERENCES events (position),
    stream_id   uuid        NOT NULL,
    size_bytes  bigint      NOT NULL,
    reason      text        NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
