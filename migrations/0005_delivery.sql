-- The delivery side's own store: fed from Kafka only (it sees what the topic
-- carries, never the event table). Its read-model tables, one set per
-- generation, are created by the projections crate; this is where it keeps
-- its Kafka offsets, committed with the read-model changes.

CREATE SCHEMA delivery;

CREATE TABLE delivery.offsets (
    generation      integer     NOT NULL CHECK (generation > 0),
    topic           text        NOT NULL,
    partition       integer     NOT NULL CHECK (partition >= 0),
    -- The offset of the next record to read.
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (generation, topic, partition)
);
