-- The web pages' sign-in sessions (tower-sessions' PostgreSQL store): one
-- row per browser that signed in or is signing in, its data (who the user
-- is, the roles, the CSRF token, or the sign-in in flight) encoded by the
-- store. Rows expire with the access token they were made from; the
-- service deletes expired ones every few minutes. Kept apart from the order
-- data in a schema of their own: nothing here is an event or a read model,
-- and losing it only signs people out.
CREATE SCHEMA web;

CREATE TABLE web.sessions (
    id           text        PRIMARY KEY,
    data         bytea       NOT NULL,
    expiry_date  timestamptz NOT NULL
);

CREATE INDEX sessions_expiry ON web.sessions (expiry_date);
