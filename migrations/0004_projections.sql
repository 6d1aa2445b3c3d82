-- Projections: the registry (which generation of a read model readers see)
-- and the checkpoints (how far each generation has read the log). A batch's
-- read-model changes and its checkpoint commit in one transaction.
-- The read models' own tables are created by the projections crate, one set
-- per generation (a rebuild fills a new generation beside the live one).

CREATE TABLE projections (
    name               text        PRIMARY KEY,
    active_generation  integer     NOT NULL CHECK (active_generation > 0),
    switched_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE projection_checkpoints (
    name            text        NOT NULL REFERENCES projections (name),
    generation      integer     NOT NULL CHECK (generation > 0),
    -- The last event applied, in reading order (transaction id, position);
    -- (0, 0) before the first.
    transaction_id  xid8        NOT NULL DEFAULT '0',
    position        bigint      NOT NULL DEFAULT 0,
    events_applied  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (name, generation)
);
