-- Read models, the projector's bookkeeping, and the relay's cursor (docs/delivery.md).
--
-- Versioning: every read-model table carries a `version` column (part of every key). A
-- rebuild writes version N+1 beside version N; `read_model_active` names the version queries
-- read, and switching is one UPDATE of that row. Queries must always filter on
-- `version = (SELECT version FROM read_model_active)`.

-- Wake the relay as soon as events commit (the relay also polls, so a lost notification
-- only costs latency). Statement-level: one notification per append, not per row.
CREATE FUNCTION herald_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION herald_notify_events();

-- The stream shard of an aggregate: the first 4 bytes of SHA-256(aggregate_id), big-endian,
-- modulo the shard count. Stable across processes, platforms and PostgreSQL versions; the
-- projector computes the same value in Rust (`projector::shard::shard_of`) and uses this
-- function to catch one shard up straight from the event store.
CREATE FUNCTION herald_shard(aggregate_id text, shards int) RETURNS int
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ((('x' || encode(substring(sha256(convert_to(aggregate_id, 'UTF8')) FROM 1 FOR 4), 'hex'))::bit(32)::bigint) % shards)::int
$$;

-- The relay's cursor: the (tx_id, global_position) of the last event it published, and per
-- shard the last event published to that shard (each stream entry names its predecessor so
-- a consumer can tell when Redis lost entries).
CREATE TABLE relay_checkpoint (
    relay           text        PRIMARY KEY,
    tx_id           bigint      NOT NULL,
    global_position bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE relay_shard_heads (
    relay           text        NOT NULL,
    shard           int         NOT NULL,
    tx_id           bigint      NOT NULL,
    global_position bigint      NOT NULL,
    PRIMARY KEY (relay, shard)
);

-- Read-model versions. `live` versions are projected by the running projectors; exactly one
-- version is active (read by queries); `building` is being filled by `projector rebuild`;
-- `retired` versions are no longer projected and may be deleted.
CREATE TABLE read_model_versions (
    version    int         PRIMARY KEY CHECK (version > 0),
    state      text        NOT NULL CHECK (state IN ('building', 'live', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    live_at    timestamptz,
    retired_at timestamptz
);

CREATE TABLE read_model_active (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    version    int         NOT NULL REFERENCES read_model_versions (version),
    switched_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO read_model_versions (version, state, live_at) VALUES (1, 'live', now());
INSERT INTO read_model_active (version) VALUES (1);

-- Per (projection, shard): the cursor of the last event of that shard applied to the read
-- model. `projection` is `read_model_v<version>`. Advanced in the same transaction as the
-- rows it covers.
CREATE TABLE projection_checkpoints (
    projection      text        NOT NULL,
    shard           int         NOT NULL,
    tx_id           bigint      NOT NULL DEFAULT 0,
    global_position bigint      NOT NULL DEFAULT 0,
    events          bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, shard)
);

-- One row per event.
CREATE TABLE message_events (
    version                  int         NOT NULL,
    tenant_id                uuid        NOT NULL,
    message_id               uuid        NOT NULL,
    sequence                 bigint      NOT NULL,
    global_position          bigint      NOT NULL,
    tx_id                    bigint      NOT NULL,
    event_type               text        NOT NULL,
    event_version            text        NOT NULL,
    status                   text        NOT NULL,
    previous_status          text,
    status_changed           boolean     NOT NULL,
    channel                  text        NOT NULL,
    provider                 text        NOT NULL,
    tags                     text[]      NOT NULL DEFAULT '{}',
    occurred_at              timestamptz NOT NULL,
    received_at              timestamptz NOT NULL,
    recorded_at              timestamptz NOT NULL,
    projected_at             timestamptz NOT NULL DEFAULT now(),
    latency_ms_from_submit   bigint,
    latency_ms_from_dispatch bigint,
    dedupe_key               text,
    engagement               text,
    engagement_first         boolean,
    payload                  jsonb       NOT NULL,
    correlation_id           text,
    causation_id             text,
    traceparent              text,
    UNIQUE (version, message_id, sequence, occurred_at)
);
SELECT create_hypertable('message_events', by_range('occurred_at', INTERVAL '1 day'));
CREATE INDEX message_events_tenant_time_idx ON message_events (version, tenant_id, occurred_at DESC);
CREATE INDEX message_events_message_idx ON message_events (version, message_id, sequence);

-- Current state per message. Every update is guarded by `last_sequence`: a row only moves
-- forward. `<status>_at` columns hold the first time the message entered that status;
-- `delivered_at` and the latencies come from the best delivery evidence.
CREATE TABLE messages (
    version                  int         NOT NULL,
    message_id               uuid        NOT NULL,
    tenant_id                uuid        NOT NULL,
    channel                  text        NOT NULL,
    provider                 text        NOT NULL,
    tags                     text[]      NOT NULL DEFAULT '{}',
    status                   text        NOT NULL,
    submitted_at             timestamptz,
    scheduled_at             timestamptz,
    queued_at                timestamptz,
    dispatched_at            timestamptz,
    deferred_at              timestamptz,
    delivered_at             timestamptz,
    delivery_inferred        boolean,
    bounced_at               timestamptz,
    failed_at                timestamptz,
    dropped_at               timestamptz,
    expired_at               timestamptz,
    cancelled_at             timestamptz,
    opened_at                timestamptz,
    clicked_at               timestamptz,
    complained_at            timestamptz,
    unsubscribed_at          timestamptz,
    latency_ms_from_submit   bigint,
    latency_ms_from_dispatch bigint,
    last_sequence            bigint      NOT NULL,
    last_event_type          text        NOT NULL,
    last_occurred_at         timestamptz NOT NULL,
    projected_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, message_id)
);
CREATE INDEX messages_tenant_idx ON messages (version, tenant_id, submitted_at DESC, message_id);
CREATE INDEX messages_status_idx ON messages (version, tenant_id, status);

-- Status counters per 15-minute UTC bucket (of occurred_at): `entered` counts events that
-- moved a message INTO `status` (the submission counts for its initial status). `tag` = ''
-- is the row over all messages; each tag of a message is counted again under that tag, so
-- never sum across tags.
CREATE TABLE message_stats_15m (
    version   int         NOT NULL,
    tenant_id uuid        NOT NULL,
    bucket    timestamptz NOT NULL,
    channel   text        NOT NULL,
    provider  text        NOT NULL,
    tag       text        NOT NULL DEFAULT '',
    status    text        NOT NULL,
    entered   bigint      NOT NULL,
    UNIQUE (version, tenant_id, bucket, channel, provider, tag, status)
);
SELECT create_hypertable('message_stats_15m', by_range('bucket', INTERVAL '7 days'));

-- Engagement counters: `total` every engagement event of that kind, `unique_messages` only
-- the first per message (EngagementRecorded.first). Same tag convention.
CREATE TABLE message_engagement_15m (
    version         int         NOT NULL,
    tenant_id       uuid        NOT NULL,
    bucket          timestamptz NOT NULL,
    channel         text        NOT NULL,
    provider        text        NOT NULL,
    tag             text        NOT NULL DEFAULT '',
    engagement      text        NOT NULL,
    total           bigint      NOT NULL,
    unique_messages bigint      NOT NULL,
    UNIQUE (version, tenant_id, bucket, channel, provider, tag, engagement)
);
SELECT create_hypertable('message_engagement_15m', by_range('bucket', INTERVAL '7 days'));

-- Mergeable latency sketch (log buckets, relative accuracy 1%; see projector::sketch):
-- `count` samples fell into `bin`. One sample per event carrying a latency
-- (`message_events.latency_ms_from_*`), in the bucket of that event's `occurred_at`.
-- Merge = SUM(count) GROUP BY bin over any set of buckets, channels, providers; a percentile
-- is a cumulative walk over bins in ascending order. bin -2147483648 holds zero-millisecond
-- samples. metric: 'submit_to_delivered' or 'dispatch_to_delivered'. Same tag convention.
CREATE TABLE message_latency_15m (
    version   int         NOT NULL,
    tenant_id uuid        NOT NULL,
    bucket    timestamptz NOT NULL,
    channel   text        NOT NULL,
    provider  text        NOT NULL,
    tag       text        NOT NULL DEFAULT '',
    metric    text        NOT NULL,
    bin       int         NOT NULL,
    count     bigint      NOT NULL,
    UNIQUE (version, tenant_id, bucket, channel, provider, tag, metric, bin)
);
SELECT create_hypertable('message_latency_15m', by_range('bucket', INTERVAL '7 days'));

-- Events the projector could not apply (`parked`, with the error) and the later events of
-- the same message held behind them (`held`), per read-model version. Operators list, retry
-- and skip them with `projector dead-letters ...`.
CREATE TABLE dead_letters (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version         int         NOT NULL,
    shard           int         NOT NULL,
    message_id      text        NOT NULL,
    sequence        bigint      NOT NULL,
    tx_id           bigint      NOT NULL,
    global_position bigint      NOT NULL,
    event_type      text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('parked', 'held', 'skipped', 'resolved')),
    error           text        NOT NULL,
    attempts        int         NOT NULL DEFAULT 0,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    UNIQUE (version, global_position)
);
CREATE INDEX dead_letters_message_idx ON dead_letters (version, message_id, sequence)
    WHERE state IN ('parked', 'held');
