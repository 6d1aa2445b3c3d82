-- Pickup numbers: the short number staff call out, counted per day
-- (API.md "Delivery service"). Every number is drawn from one sequence: no
-- lock and no hot row on the place-order path, and a draw is never undone,
-- so an order that fails leaves a gap, never a duplicate. A day's numbers
-- count from the sequence's value when the day's first order asked
-- (`base`, written once per day in a statement of its own before any number
-- of that day is drawn): a number is `draw - base`, unique within its day,
-- from 1. It is recorded in the OrderPlaced event (schema version 3), so
-- every reader, the Kafka side included, shows the same one.
CREATE SEQUENCE pickup_numbers AS bigint;

CREATE TABLE pickup_days (
    -- The shop's date (PICKUP_UTC_OFFSET) of the day's orders.
    day   date   PRIMARY KEY,
    base  bigint NOT NULL
);
