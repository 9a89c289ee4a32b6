-- Per-tenant quotas: what one tenant may ask of the services, where it differs from the
-- defaults in configuration (`HERALD_QUOTA_*`). A NULL column means "the default", so
-- changing a default in configuration changes it for every tenant that did not set its own,
-- and a tenant without a row here has every default.
--
-- Rows are written by `command-service tenant quota TENANT_ID ...`; the services read them
-- with the tenant's API key (one lookup, cached as briefly as the key), so a change takes
-- effect within the key cache's lifetime on every replica.
--
-- A new table: nothing existing is rewritten, and tenants only gains a foreign key pointing
-- at it.
CREATE TABLE tenant_quotas (
    tenant_id               uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    requests_per_second     integer     CHECK (requests_per_second > 0),
    request_burst           integer     CHECK (request_burst > 0),
    concurrent_requests     integer     CHECK (concurrent_requests > 0),
    batch_events_per_second integer     CHECK (batch_events_per_second > 0),
    batch_event_burst       integer     CHECK (batch_event_burst > 0),
    concurrent_batches      integer     CHECK (concurrent_batches > 0),
    concurrent_queries      integer     CHECK (concurrent_queries > 0),
    query_cost_per_second   integer     CHECK (query_cost_per_second > 0),
    query_cost_burst        integer     CHECK (query_cost_burst > 0),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
