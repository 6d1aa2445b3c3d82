-- The menu (API.md "Menu"): edited by operators (`orders menu …`), read by
-- anyone (`GET /menu`) and by the place-order check. No rows: no menu, and
-- the API accepts any drink and price, as the original clients expect.
CREATE TABLE menu (
    coffee_name    text    PRIMARY KEY CHECK (coffee_name = btrim(coffee_name)
                                               AND char_length(coffee_name) BETWEEN 1 AND 100),
    -- The price per size, in won; NULL: the drink does not come in that size.
    regular_price  integer CHECK (regular_price BETWEEN 0 AND 1000000),
    large_price    integer CHECK (large_price BETWEEN 0 AND 1000000),
    -- The temperatures it is served at: a non-empty subset of hot, iced.
    temperatures   text[]  NOT NULL CHECK (cardinality(temperatures) > 0
                                           AND temperatures <@ ARRAY['hot', 'iced']::text[]),
    sold_out       boolean NOT NULL DEFAULT false,
    -- Where the menu lists it (0 first).
    position       integer NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (regular_price IS NOT NULL OR large_price IS NOT NULL)
);
