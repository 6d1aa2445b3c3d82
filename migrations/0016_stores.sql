-- The chain's stores (API.md "Menu": `GET /stores`), what each has sold out,
-- and pickup numbers counted per store per day. Every order belongs to one
-- store (OrderPlaced v4); orders placed before stores, and orders that name
-- none, are the default store's, `main`, which always exists.

CREATE TABLE stores (
    store_id   text    PRIMARY KEY CHECK (store_id ~ '^[A-Za-z0-9._-]{1,40}$'),
    name       text    NOT NULL CHECK (name = btrim(name) AND char_length(name) BETWEEN 1 AND 100),
    -- A closed store takes no orders (422); its board still shows its orders.
    open       boolean NOT NULL DEFAULT true,
    -- Where `GET /stores` lists it (0 first).
    position   integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO stores (store_id, name, open, position) VALUES ('main', '본점', true, 0);

-- A drink sold out at one store (on sale at the others). `menu.sold_out`
-- stays what it was: sold out at every store. Not tied to the menu's rows:
-- `orders menu set` replaces them, and a drink that leaves the menu is
-- refused as off the menu whatever this says.
CREATE TABLE sold_out (
    store_id    text NOT NULL REFERENCES stores ON DELETE CASCADE,
    coffee_name text NOT NULL,
    PRIMARY KEY (store_id, coffee_name)
);

-- A change of stores or of what is sold out moves the menu's generation
-- (migrations/0014): place-order holds all of it in memory and reads it
-- again when the generation moves.
CREATE TRIGGER stores_changes_advance_the_generation
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON stores
    FOR EACH STATEMENT EXECUTE FUNCTION menu_generation_advance();
CREATE TRIGGER sold_out_changes_advance_the_generation
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sold_out
    FOR EACH STATEMENT EXECUTE FUNCTION menu_generation_advance();

-- Pickup numbers per store per day: `last` is the store's last number of
-- the day. A draw of n numbers adds n in one statement (an upsert) and
-- returns the new last, so the numbers are last - n + 1 … last, from 1,
-- unique within the store's day. Today's default store continues from where
-- the earlier build's sequence (0012) stood, so an upgrade during opening
-- hours does not call a number twice.
CREATE TABLE pickup_counters (
    store_id text    NOT NULL,
    day      date    NOT NULL,
    last     integer NOT NULL CHECK (last >= 0),
    PRIMARY KEY (store_id, day)
);
INSERT INTO pickup_counters (store_id, day, last)
SELECT 'main', d.day, GREATEST(s.last_value - d.base, 0)
  FROM pickup_days d, pickup_numbers s
 WHERE d.day = (SELECT max(day) FROM pickup_days)
   AND s.is_called;
