-- Rollups of read-model generation 2: one row per group and bucket holding every measure,
-- kept at three levels (15 minutes, 1 hour, 1 UTC day) in the same transaction as the
-- events they count.
--
-- The generation-1 tables (message_stats_15m, message_engagement_15m, message_latency_15m)
-- held one row per status, per engagement kind and per sketch bin, so an hour of one group
-- read dozens of rows and the latency sketch had about as many rows as delivered messages.
-- Here a row holds:
--   entered        bigint[]  messages entering each status, in read_model::rollup::STATUSES
--                            order (scheduled, queued, cancelled, dispatched, deferred,
--                            delivered, bounced, failed, dropped, expired)
--   engaged        bigint[]  engagement reports per kind (opened, clicked, complained,
--                            unsubscribed)
--   engaged_first  bigint[]  the first report per message and kind (unique engagement)
--   submit_bins / submit_counts, dispatch_bins / dispatch_counts
--                            the whole latency sketch of each metric: bins ascending, counts
--                            at the same index (read_model::sketch), zero counts left out
-- Tag convention as before: tag '' is the row over all messages, each tag of a message is
-- counted again under that tag.
--
-- Existing read-model versions have no rows here: if the store holds events, this declares
-- a read-model change, and a projector builds a generation-2 version beside the live one
-- (migration V8). An empty store has nothing to rebuild: its versions become generation 2.

CREATE TABLE message_rollup_15m (
    version         int         NOT NULL,
    tenant_id       uuid        NOT NULL,
    bucket          timestamptz NOT NULL,
    channel         text        NOT NULL,
    provider        text        NOT NULL,
    tag             text        NOT NULL DEFAULT '',
    entered         bigint[]    NOT NULL,
    engaged         bigint[]    NOT NULL,
    engaged_first   bigint[]    NOT NULL,
    submit_bins     int[]       NOT NULL,
    submit_counts   bigint[]    NOT NULL,
    dispatch_bins   int[]       NOT NULL,
    dispatch_counts bigint[]    NOT NULL,
    UNIQUE (version, tenant_id, bucket, channel, provider, tag)
);
SELECT create_hypertable('message_rollup_15m', by_range('bucket', INTERVAL '7 days'));

CREATE TABLE message_rollup_1h (LIKE message_rollup_15m INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    UNIQUE (version, tenant_id, bucket, channel, provider, tag));
SELECT create_hypertable('message_rollup_1h', by_range('bucket', INTERVAL '30 days'));

CREATE TABLE message_rollup_1d (LIKE message_rollup_15m INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    UNIQUE (version, tenant_id, bucket, channel, provider, tag));
SELECT create_hypertable('message_rollup_1d', by_range('bucket', INTERVAL '365 days'));

-- Element-wise sum of two counter arrays (the shorter one padded with zeros).
CREATE FUNCTION herald_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
      FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;

-- The sum of two sketches given as (bins, counts): bins ascending, zero counts dropped.
CREATE FUNCTION herald_sketch_add(
    a_bins int[], a_counts bigint[], b_bins int[], b_counts bigint[],
    OUT bins int[], OUT counts bigint[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(bin ORDER BY bin), '{}'), coalesce(array_agg(n ORDER BY bin), '{}')
      FROM (SELECT bin, sum(n)::bigint AS n
              FROM (SELECT * FROM unnest(a_bins, a_counts)
                    UNION ALL
                    SELECT * FROM unnest(b_bins, b_counts)) AS u(bin, n)
             GROUP BY bin
            HAVING sum(n) <> 0) AS s
$$;

-- Compression where the TimescaleDB build offers it, as V4 does for generation 1.
DO $tsl$
DECLARE
    edition text := coalesce(current_setting('timescaledb.license', true), '');
    t record;
BEGIN
    IF edition <> 'timescale' THEN
        RAISE NOTICE 'timescaledb.license is "%" (not "timescale"): compression of the rollup levels is TSL-only and was not added', edition;
        RETURN;
    END IF;
    FOR t IN
        SELECT * FROM (VALUES
            ('message_rollup_15m', INTERVAL '30 days'),
            ('message_rollup_1h',  INTERVAL '90 days'),
            ('message_rollup_1d',  INTERVAL '730 days')
        ) AS v (hypertable, compress_after)
    LOOP
        EXECUTE format(
            'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
            t.hypertable, 'version, tenant_id, channel', 'bucket DESC, provider, tag');
        PERFORM add_compression_policy(t.hypertable::regclass, t.compress_after, if_not_exists => true);
        RAISE NOTICE 'compression on %: chunks older than %', t.hypertable, t.compress_after;
    END LOOP;
END
$tsl$;

DO $generation$
BEGIN
    IF EXISTS (SELECT 1 FROM events) THEN
        PERFORM herald_read_model_changed(
            'rollups hold whole groups (counts, engagement, latency sketches as arrays) at 15 minutes, 1 hour and 1 day');
    ELSE
        UPDATE read_model_generation
           SET required = 2, changed_at = now(),
               reason = 'rollups hold whole groups at 15 minutes, 1 hour and 1 day (an empty store, nothing to rebuild)';
        UPDATE read_model_versions SET generation = 2;
    END IF;
END
$generation$;
