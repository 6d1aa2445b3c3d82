-- Idempotency keys for POST requests: a retried request with the same key
-- returns the first result and appends nothing.

CREATE TABLE idempotency_keys (
    -- Keys are per user: two customers may happen to pick the same key.
    scope        text        NOT NULL,
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- The request, normalised: the same key with another request is refused.
    fingerprint  text        NOT NULL,
    -- The stream the first request wrote and its version right after it: the
    -- first response is rebuilt by folding the stream up to that version.
    stream_id    uuid        NOT NULL,
    version      integer     NOT NULL,
    log_position bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
