-- Loss on the Kafka side is loud (docs/adr/0011-a-patched-rskafka.md and the
-- runbook's "The topic lost records").

-- The partition count the relay first published a topic with. Events are
-- spread by hash of the order id modulo this count: if it changes under a
-- running system, an order's later events would land on another partition
-- than its earlier ones, so the relay refuses to publish instead.
CREATE TABLE kafka_topics (
    topic          text        PRIMARY KEY,
    partitions     integer     NOT NULL CHECK (partitions > 0),
    first_seen_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- What the delivery projection last applied on each partition: a topic
-- deleted and recreated (or an unclean leader election) can have grown past
-- the stored offset with other records; the id of the record at the last
-- applied offset tells them apart.
ALTER TABLE delivery.offsets
    ADD COLUMN last_event_id uuid,
    ADD COLUMN last_event_offset bigint;

-- A partition the delivery projection stopped because the topic no longer
-- holds what its offsets say (shown by `status`, cleared when it resumes).
CREATE TABLE delivery.stopped_partitions (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    reason       text        NOT NULL,
    stopped_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, partition)
);

-- A generation an operator accepted as incomplete (records deleted by
-- retention before it was built): later moves of orders whose placement is
-- gone are counted as such, not held as corruption.
CREATE TABLE projection_incomplete (
    projection   text        NOT NULL REFERENCES projections (name),
    generation   integer     NOT NULL,
    detail       text        NOT NULL,
    accepted_by  text        NOT NULL,
    accepted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (projection, generation)
);
