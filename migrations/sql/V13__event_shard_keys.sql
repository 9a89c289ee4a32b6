-- The shard of an event is known when it is read, without hashing.
--
-- `shard_key` holds the first 4 bytes of SHA-256(aggregate_id), big-endian, computed once
-- when the row is written, by a trigger (so no writer can set it wrong, and postgres-es,
-- which names its columns, never sees it). An event's shard is `shard_key % shards`, the
-- value `herald_shard(aggregate_id, shards)` computes by hashing: reads of one shard, the
-- lag and the oracle filter on the column instead.
--
-- Rows written before this migration keep a NULL key: filling them would rewrite the whole
-- event store under an exclusive lock (two minutes for ten million events here, every
-- writer waiting). Readers take `coalesce(shard_key, herald_shard_key(aggregate_id))`, so
-- only those older rows are hashed, and only when a read reaches back before the upgrade.
-- Adding a nullable column without a default rewrites nothing.
CREATE FUNCTION herald_shard_key(aggregate_id text) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ('x' || encode(substring(sha256(convert_to(aggregate_id, 'UTF8')) FROM 1 FOR 4), 'hex'))::bit(32)::bigint
$$;

ALTER TABLE events ADD COLUMN shard_key bigint;

CREATE FUNCTION herald_events_shard_key() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.shard_key := herald_shard_key(NEW.aggregate_id);
    RETURN NEW;
END
$$;

CREATE TRIGGER events_shard_key BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION herald_events_shard_key();

-- How many events the relay has published to each shard, up to and including its head:
-- beside a projection checkpoint's count of the events it applied up to its cursor, the
-- difference is how many published events the read model lacks, without reading them.
-- NULL until the relay has counted a shard whose head predates this column (it counts once,
-- from the event store, at its next start).
ALTER TABLE relay_shard_heads ADD COLUMN published bigint;

-- A head that moves without its count (written by a relay of an earlier release, which does
-- not know the column) loses the count rather than keep a wrong one.
CREATE FUNCTION herald_relay_head_count_follows() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.tx_id, NEW.global_position) IS DISTINCT FROM (OLD.tx_id, OLD.global_position)
       AND NEW.published IS NOT DISTINCT FROM OLD.published THEN
        NEW.published := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER relay_shard_heads_count BEFORE UPDATE ON relay_shard_heads
    FOR EACH ROW EXECUTE FUNCTION herald_relay_head_count_follows();
