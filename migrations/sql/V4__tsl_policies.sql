-- Compression of old chunks, only where the TimescaleDB build offers it (DESIGN section 8).
--
-- Compression (the "columnstore") and its background policies are Timescale License (TSL)
-- features: the official `timescale/timescaledb` images (docker-compose.yml) have them
-- (`timescaledb.license` = 'timescale'); the Apache-2 build the local set-up compiles does
-- not ('apache'), and calling them there fails. So this migration checks the license and
-- either adds compression or does nothing and says so (a NOTICE, which the services log
-- when they migrate). Either way it is recorded as applied; refinery never runs it again.
-- Every statement of the TSL branch is re-runnable, so after moving a database to a TSL
-- build, running this file once by hand with psql adds the policies (docs/deployment.md).
--
-- What gets compressed: chunks of `message_events` older than 7 days, and of the 15-minute
-- rollups older than 30 days (late provider observations still land in recent rollup
-- buckets uncompressed). Writes into compressed chunks still work (TimescaleDB >= 2.11
-- decompresses what an INSERT ... ON CONFLICT or DELETE touches), only slower: a read-model
-- rebuild over years of history pays that cost. Every column of each table's unique
-- constraint is a segment-by or order-by column, as compression requires.
--
-- No retention policy is added: dropping read-model history is an operator's decision (the
-- event store keeps everything and rebuilds recreate it); docs/deployment.md shows
-- `add_retention_policy` (TSL) and `drop_chunks` (both editions).

DO $tsl$
DECLARE
    edition text := coalesce(current_setting('timescaledb.license', true), '');
    t record;
BEGIN
    IF edition <> 'timescale' THEN
        RAISE NOTICE 'timescaledb.license is "%" (not "timescale"): compression policies are TSL-only and were not added; old chunks stay uncompressed (see docs/deployment.md, "TimescaleDB editions")', edition;
        RETURN;
    END IF;

    FOR t IN
        SELECT * FROM (VALUES
            ('message_events',         'version, tenant_id',          'occurred_at DESC, message_id, sequence', INTERVAL '7 days'),
            ('message_stats_15m',      'version, tenant_id, channel', 'bucket DESC, provider, tag, status',     INTERVAL '30 days'),
            ('message_engagement_15m', 'version, tenant_id, channel', 'bucket DESC, provider, tag, engagement', INTERVAL '30 days'),
            ('message_latency_15m',    'version, tenant_id, channel', 'bucket DESC, provider, tag, metric, bin', INTERVAL '30 days')
        ) AS v (hypertable, segment_by, order_by, compress_after)
    LOOP
        -- Settings cannot change once chunks are compressed: only enable where it is off.
        IF NOT EXISTS (
            SELECT 1 FROM timescaledb_information.hypertables h
             WHERE h.hypertable_schema = current_schema()
               AND h.hypertable_name = t.hypertable
               AND h.compression_enabled
        ) THEN
            EXECUTE format(
                'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
                t.hypertable, t.segment_by, t.order_by);
        END IF;
        PERFORM add_compression_policy(t.hypertable::regclass, t.compress_after, if_not_exists => true);
        RAISE NOTICE 'compression on %: segment by %, order by %, chunks older than %',
            t.hypertable, t.segment_by, t.order_by, t.compress_after;
    END LOOP;
END
$tsl$;
