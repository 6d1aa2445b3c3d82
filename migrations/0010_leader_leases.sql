-- Leadership by lease (docs/adr/0007-relay-leadership.md): one relay per
-- topic, one worker per projection. A session advisory lock alone does not
-- notice a leader that is frozen (SIGSTOP, a paused VM, a partition): its
-- session stays open and the lock with it. A lease must be renewed.
--
-- A standby takes a lease whose expiry passed (a frozen leader) or whose
-- holder's lease connection is gone (a dead one: no waiting for the expiry).
-- Every takeover raises the token. A leader's writes check their token in
-- their own transaction, holding this row shared until they commit
-- (fencing): a takeover waits for them, and a leader that wakes up after
-- losing its lease has every later write refused.
CREATE TABLE leader_leases (
    -- 'relay <topic>' or 'projection <name>'.
    name         text        PRIMARY KEY,
    token        bigint      NOT NULL CHECK (token > 0),
    -- Who holds it (host, pid, build), for operators.
    holder       text        NOT NULL,
    -- The backend of the holder's lease connection (the one that renews).
    holder_pid   integer     NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    renewed_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL
);
