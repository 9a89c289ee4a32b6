-- Statistics read the rollups by (version, tenant, tag, time range) and need only a few
-- columns: covering indexes let those reads be index-only scans instead of visiting every
-- row of every chunk (measured here: 98 ms -> 29 ms for 30 days of hourly counts). The
-- unique keys of V3 stay as they are: they serve the projector's upserts.
CREATE INDEX message_stats_15m_read_idx
    ON message_stats_15m (version, tenant_id, tag, bucket)
    INCLUDE (channel, provider, status, entered);
CREATE INDEX message_engagement_15m_read_idx
    ON message_engagement_15m (version, tenant_id, tag, bucket)
    INCLUDE (channel, provider, engagement, total, unique_messages);
CREATE INDEX message_latency_15m_read_idx
    ON message_latency_15m (version, tenant_id, tag, metric, bucket)
    INCLUDE (channel, provider, bin, count);
