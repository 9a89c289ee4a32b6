-- Latency sketches take 2 + w bytes a bin instead of 12, and rollup rows stay uncompressed
-- and inline.
--
-- With 12 bytes a bin, a 15-minute row of a busy group (two sketches of 150 bins or more)
-- passed the ~2 kB at which PostgreSQL compresses a row's long values and moves them into
-- the TOAST table. Every read of such a row then fetched and decompressed both sketches:
-- on a week of 15-minute rows that was most of the statement's time, and it grew with the
-- sketches' fill, so a query over the same range cost more as the data grew. Each live
-- batch also recompressed the rows it rewrote.
--
-- The layout (read_model::sketch::encode): nothing for a sketch without samples; otherwise
-- one byte w, the width of every count in bytes (1, 2, 4 or 8, the narrowest that holds
-- them all), then for each bin, ascending, the bin as a big-endian int2 (-32768 standing
-- for the zero bin, -2147483648 in memory) and its samples as a big-endian signed integer
-- of w bytes. Every latency's bin is 0..2184, so int2 holds it. A 15-minute row's counts
-- are below 128: 3 bytes a bin.
--
-- toast_tuple_target = 8160 (the largest allowed) keeps rows up to a page uncompressed in
-- the heap: a day row's sketches, hundreds of bins with two-byte counts, are still a few
-- kilobytes. TimescaleDB passes the setting to existing and future chunks.
--
-- A CHECK on each sketch's first byte refuses the old layout (its first byte is 0x00 or
-- 0x80), so a writer of the previous release still running beside this one fails loudly
-- instead of storing bytes no reader of this release can decode.
--
-- The rows are converted in place: same read-model generation, nothing to rebuild.

-- The old layout's reader, for the conversion only.
ALTER FUNCTION herald_sketch_bins(bytea) RENAME TO herald_sketch_bins_12;

-- The stored int2 of a bin, refusing bins no latency falls into.
CREATE FUNCTION herald_sketch_stored_bin(bin int) RETURNS int2
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF bin = -2147483648 THEN
        RETURN -32768;
    END IF;
    IF bin < 0 OR bin > 32767 THEN
        RAISE EXCEPTION 'bin % is no latency''s bin: a sketch stores the zero bin (-2147483648) and 0..32767', bin;
    END IF;
    RETURN bin;
END
$$;

-- The stored sketch of (bin, samples) pairs in any order, possibly repeated.
CREATE OR REPLACE FUNCTION herald_sketch_of(bins int[], samples bigint[]) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH s AS (
        SELECT b, sum(n)::bigint AS n
          FROM unnest(bins, samples) AS u(b, n)
         GROUP BY b
        HAVING sum(n) <> 0
    ), w AS (
        SELECT CASE WHEN m <= 127 THEN 1 WHEN m <= 32767 THEN 2 WHEN m <= 2147483647 THEN 4 ELSE 8 END AS w
          FROM (SELECT max(CASE WHEN n < 0 THEN -(n + 1) ELSE n END) AS m FROM s) AS x
         WHERE m IS NOT NULL
    )
    SELECT coalesce(
        (SELECT set_byte('\x00'::bytea, 0, w.w)
                || string_agg(int2send(herald_sketch_stored_bin(s.b)) || substring(int8send(s.n) FROM 9 - w.w),
                              ''::bytea ORDER BY s.b)
           FROM s, w
          GROUP BY w.w),
        ''::bytea)
$$;

-- The (bin, samples) pairs of a stored sketch, for SQL readers (dashboards, psql).
CREATE FUNCTION herald_sketch_bins(sketch bytea, OUT bin int, OUT samples bigint)
RETURNS SETOF record
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN r.b = -32768 THEN -2147483648 ELSE r.b END,
           ('x' || lpad(encode(substring(sketch FROM z + 3 FOR h.w), 'hex'), 16,
                        CASE WHEN get_byte(sketch, z + 2) >= 128 THEN 'f' ELSE '0' END))::bit(64)::bigint
      FROM (SELECT get_byte(sketch, 0) AS w WHERE length(sketch) > 0) AS h,
           generate_series(1, length(sketch) - 1, 2 + h.w) AS z,
           LATERAL (SELECT get_byte(sketch, z) * 256 + get_byte(sketch, z + 1) AS u) AS u,
           LATERAL (SELECT CASE WHEN u.u >= 32768 THEN u.u - 65536 ELSE u.u END AS b) AS r
$$;

-- herald_sketch_add(a, b) reads through herald_sketch_bins and herald_sketch_of by name,
-- so it sums sketches of the new layout unchanged.

DO $convert$
DECLARE
    level text;
BEGIN
    FOREACH level IN ARRAY ARRAY['message_rollup_15m', 'message_rollup_1h', 'message_rollup_1d'] LOOP
        EXECUTE format('ALTER TABLE %I SET (toast_tuple_target = 8160)', level);
        EXECUTE format(
            'UPDATE %I SET '
            'submit_sketch = (SELECT herald_sketch_of(array_agg(bin), array_agg(samples)) '
            '                   FROM herald_sketch_bins_12(submit_sketch)), '
            'dispatch_sketch = (SELECT herald_sketch_of(array_agg(bin), array_agg(samples)) '
            '                     FROM herald_sketch_bins_12(dispatch_sketch)) '
            'WHERE length(submit_sketch) > 0 OR length(dispatch_sketch) > 0', level);
        EXECUTE format(
            'ALTER TABLE %I ADD CONSTRAINT %I CHECK '
            '(length(submit_sketch) = 0 OR get_byte(submit_sketch, 0) IN (1, 2, 4, 8)), '
            'ADD CONSTRAINT %I CHECK '
            '(length(dispatch_sketch) = 0 OR get_byte(dispatch_sketch, 0) IN (1, 2, 4, 8))',
            level, level || '_submit_sketch_layout', level || '_dispatch_sketch_layout');
    END LOOP;
END
$convert$;

DROP FUNCTION herald_sketch_bins_12(bytea);
