-- The menu's generation: a counter every change of the menu table moves, in
-- the changing transaction (a statement trigger, so a change made by any
-- writer, not only `orders menu …`, counts). Place-order keeps the menu in
-- memory and reads it again only when the generation it reads (one small
-- query shared by the requests that arrive together) is not the one it holds.
CREATE TABLE menu_generation (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    generation bigint  NOT NULL
);
INSERT INTO menu_generation (only_row, generation) VALUES (true, 1);

CREATE FUNCTION menu_generation_advance() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE menu_generation SET generation = generation + 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER menu_changes_advance_the_generation
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON menu
    FOR EACH STATEMENT EXECUTE FUNCTION menu_generation_advance();
