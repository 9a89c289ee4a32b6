-- The raw statistics path counts latency per delivered message (one sample per message, at
-- its delivery time), reading `messages` by tenant and delivery time instead of every
-- event of the range. A partial index holds only the delivered messages it reads.
CREATE INDEX messages_delivered_idx
    ON messages (version, tenant_id, delivered_at)
    INCLUDE (channel, provider, tags, latency_ms_from_submit, latency_ms_from_dispatch)
    WHERE status = 'delivered';
