-- Herald's event store: the only source of truth.
--
-- The column list of `events` and `snapshots` is what postgres-es 0.5 reads and writes; it
-- names its columns in every statement, so the extra columns below (all with defaults) are
-- invisible to it. The table is a plain table, never a hypertable: the relay tails it by
-- (tx_id, global_position) and chunking by time would gain nothing there.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    -- Total order of appends, handed out at insert time. Not commit order: see tx_id.
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction. Readers only take rows whose tx_id is below the snapshot's
    -- xmin horizon, where every transaction has finished, so no late commit can appear
    -- behind a reader's cursor (the "gap problem", DESIGN section 4).
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The primary key doubles as the optimistic-concurrency guard: two writers appending the
    -- same (aggregate, sequence) collide here and postgres-es reports a conflict.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position_key ON events (global_position);
-- The relay's cursor: scans in commit-safe order without sorting.
CREATE INDEX events_tx_cursor_idx ON events (tx_id, global_position);

-- Required by postgres-es even though Herald runs it in event-store mode only (snapshot and
-- aggregate-store modes re-apply events to the stored snapshot).
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          jsonb  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);
