-- The outbox carries its event's writing transaction, so that the relay can
-- read it in the log's gap-safe order, (transaction_id, position), and keep
-- several rounds in flight: a round reads after the previous one's last row
-- instead of waiting for its delete, and a row that commits late (a lower
-- position, a transaction still running when the previous round read) sorts
-- after that cursor, never behind it (projections/src/log.rs explains the
-- order; docs/adr/0018-a-pipelined-relay.md the relay).
--
-- Appends copy the id from the event they insert; the default covers any
-- other writer.

ALTER TABLE outbox ADD COLUMN transaction_id xid8;

UPDATE outbox o SET transaction_id = e.transaction_id
  FROM events e WHERE e.position = o.position;

ALTER TABLE outbox
    ALTER COLUMN transaction_id SET DEFAULT log_xact_id(),
    ALTER COLUMN transaction_id SET NOT NULL;

CREATE INDEX outbox_log_order ON outbox (transaction_id, position);
