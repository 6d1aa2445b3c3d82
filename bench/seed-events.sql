-- Seeds the event log with :orders orders (psql -v orders=N), about 2.04
-- events per order: placements, then moves along every path of the lifecycle
-- (half prepared, a quarter out for delivery, an eighth delivered, a sixth
-- cancelled). Three placements in four are one drink as the first builds
-- wrote them (OrderPlaced v1); every fourth is as this build writes it (v4):
-- one to three drinks with their options, at one of three stores, with a
-- pickup number. Order ids are UUID v7, as the service makes them.
\set ON_ERROR_STOP on

CREATE FUNCTION pg_temp.uuid_v7(at timestamptz) RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    -- 48-bit Unix milliseconds, then random bits with version 7 (0111).
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM at) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

BEGIN;
CREATE TEMP TABLE seed ON COMMIT DROP AS
SELECT pg_temp.uuid_v7(now() - (:orders - n) * interval '1 ms') AS id,
       'user' || (n % 1000) AS user_id, n
  FROM generate_series(1, :orders) AS n;

INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
SELECT id, 1, gen_random_uuid(), 'OrderPlaced', 1, jsonb_build_object(
           'order_id', id, 'user_id', user_id, 'coffee_name', 'coffee ' || (n % 7),
           'coffee_price', 1000 + (n % 5) * 500, 'coffee_qty', 1 + n % 3,
           'total_price', (1000 + (n % 5) * 500) * (1 + n % 3))
  FROM seed WHERE n % 4 <> 0 ORDER BY n;
INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
SELECT s.id, 1, gen_random_uuid(), 'OrderPlaced', 4, jsonb_build_object(
           'order_id', s.id, 'user_id', s.user_id,
           'store_id', (ARRAY['main', 'gangnam', 'jamsil'])[1 + s.n % 3],
           'lines', l.lines, 'total_price', l.total, 'pickup_number', 1 + s.n % 999)
  FROM seed s,
       LATERAL (SELECT jsonb_agg(jsonb_build_object(
                          'coffee_name', 'coffee ' || ((s.n + i) % 7),
                          'coffee_price', 1000 + ((s.n + i) % 5) * 500,
                          'coffee_qty', 1 + (s.n + i) % 3,
                          'options', jsonb_build_object(
                              'temperature', CASE WHEN i % 2 = 0 THEN 'hot' ELSE 'iced' END,
                              'size', CASE WHEN i = 2 THEN 'large' ELSE 'regular' END))
                        ORDER BY i) AS lines,
                       sum((1000 + ((s.n + i) % 5) * 500) * (1 + (s.n + i) % 3)) AS total
                  FROM generate_series(0, s.n % 3) AS i) l
 WHERE s.n % 4 = 0 ORDER BY s.n;
INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
SELECT id, 2, gen_random_uuid(), 'OrderPreparationStarted', 1, '{}' FROM seed WHERE n % 2 = 0 ORDER BY n;
INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
SELECT id, 2, gen_random_uuid(), 'OrderCancelled', 1, '{"by": "customer"}' FROM seed WHERE n % 2 = 1 AND n % 3 = 0 ORDER BY n;
INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
SELECT id, 3, gen_random_uuid(), 'OrderOutForDelivery', 1, '{}' FROM seed WHERE n % 4 = 0 ORDER BY n;
INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload)
SELECT id, 4, gen_random_uuid(), 'OrderDelivered', 1, '{}' FROM seed WHERE n % 8 = 0 ORDER BY n;
COMMIT;
