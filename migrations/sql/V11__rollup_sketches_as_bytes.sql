-- Latency sketches of the rollups become one `bytea` per metric instead of two arrays.
--
-- A reader of `int4[]`/`int8[]` gets every element through the element type's send
-- function, one call and one allocation per element: for a week of 15-minute sketches
-- that was most of the time of the query. A `bytea` is sent as stored. Its layout is the
-- binary one of the arrays without their per-element headers: for each bin, ascending,
-- `int4send(bin) || int8send(samples)` (12 bytes, big-endian), bins with no samples left
-- out, an empty sketch empty.
--
-- The rows are converted in place (same read-model generation: no rebuild). Rows written
-- before this migration keep the bytes of the dropped arrays until they are next written;
-- `VACUUM FULL` of a level's chunks gives that space back.

-- The (bin, samples) pairs of a stored sketch, for SQL readers (dashboards, psql).
CREATE FUNCTION herald_sketch_bins(sketch bytea, OUT bin int, OUT samples bigint)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || encode(substring(sketch FROM o FOR 4), 'hex'))::bit(32)::int,
           ('x' || encode(substring(sketch FROM o + 4 FOR 8), 'hex'))::bit(64)::bigint
      FROM generate_series(1, length(sketch) - 11, 12) AS o
$$;

-- The stored sketch of (bin, samples) pairs in any order, possibly repeated.
CREATE FUNCTION herald_sketch_of(bins int[], samples bigint[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(int4send(b) || int8send(n), ''::bytea ORDER BY b), ''::bytea)
      FROM (SELECT b, sum(n)::bigint AS n
              FROM unnest(bins, samples) AS u(b, n)
             GROUP BY b
            HAVING sum(n) <> 0) AS s
$$;

-- The sum of two stored sketches (the projector merges in memory; this is for SQL).
DROP FUNCTION herald_sketch_add(int[], bigint[], int[], bigint[]);
CREATE FUNCTION herald_sketch_add(a bytea, b bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT herald_sketch_of(array_agg(bin), array_agg(samples))
      FROM (SELECT * FROM herald_sketch_bins(a) UNION ALL SELECT * FROM herald_sketch_bins(b)) AS u
$$;

DO $convert$
DECLARE
    level text;
BEGIN
    FOREACH level IN ARRAY ARRAY['message_rollup_15m', 'message_rollup_1h', 'message_rollup_1d'] LOOP
        EXECUTE format(
            'ALTER TABLE %I ADD COLUMN submit_sketch bytea NOT NULL DEFAULT ''''::bytea, '
            'ADD COLUMN dispatch_sketch bytea NOT NULL DEFAULT ''''::bytea', level);
        EXECUTE format(
            'UPDATE %I SET submit_sketch = herald_sketch_of(submit_bins, submit_counts), '
            'dispatch_sketch = herald_sketch_of(dispatch_bins, dispatch_counts) '
            'WHERE cardinality(submit_bins) > 0 OR cardinality(dispatch_bins) > 0', level);
        EXECUTE format(
            'ALTER TABLE %I DROP COLUMN submit_bins, DROP COLUMN submit_counts, '
            'DROP COLUMN dispatch_bins, DROP COLUMN dispatch_counts', level);
    END LOOP;
END
$convert$;
