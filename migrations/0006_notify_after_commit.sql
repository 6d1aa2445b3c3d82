-- Appends no longer NOTIFY inside their transaction: a transaction that has
-- issued NOTIFY takes a cluster-wide lock at commit and keeps it until its
-- commit record is flushed, so every order's commit waited for the previous
-- one (no group commit). The writing process now sends one NOTIFY for any
-- number of commits, after they committed (docs/adr/0008). Listeners also
-- poll, so a writer that never notifies (a crashed one, psql) is still seen.

DROP TRIGGER outbox_notify_after_insert ON outbox;
DROP FUNCTION outbox_notify();
