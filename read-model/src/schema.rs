//! What the read-model code relies on in the schema, checked after every migration run
//! (`migrations::schema`): a table, column, hypertable or index named here that a
//! migration dropped or renamed stops start-up, naming it.

use migrations::Requirement::{self, Function, Hypertable, Index, Row, Table};

const ROLLUP_COLUMNS: &[&str] = &[
    "version",
    "tenant_id",
    "bucket",
    "channel",
    "provider",
    "tag",
    "entered",
    "engaged",
    "engaged_first",
    "submit_sketch",
    "dispatch_sketch",
];

/// The read models' requirements.
pub const REQUIRED: &[Requirement] = &[
    Table {
        name: "read_model_versions",
        columns: &["version", "state", "live_at", "retired_at", "generation"],
    },
    Table {
        name: "read_model_active",
        columns: &["version", "switched_at"],
    },
    Row {
        what: "the active read-model version row",
        exists: "SELECT EXISTS (SELECT 1 FROM read_model_active a \
                 JOIN read_model_versions v USING (version) WHERE v.state = 'live')",
    },
    Table {
        name: "read_model_generation",
        columns: &["required", "reason", "changed_at"],
    },
    Function {
        name: "herald_read_model_changed",
    },
    Table {
        name: "projection_checkpoints",
        columns: &["projection", "shard", "tx_id", "global_position", "events"],
    },
    Table {
        name: "relay_checkpoint",
        columns: &["tx_id", "global_position"],
    },
    Table {
        name: "relay_shard_heads",
        columns: &["relay", "shard", "tx_id", "global_position", "published"],
    },
    Hypertable {
        name: "message_events",
        time_column: "occurred_at",
    },
    Index {
        table: "message_events",
        name: "message_events_message_idx",
    },
    Index {
        table: "message_events",
        name: "message_events_tenant_time_idx",
    },
    Table {
        name: "messages",
        columns: &[
            "version",
            "message_id",
            "tenant_id",
            "status",
            "submitted_at",
            "delivered_at",
            "last_sequence",
        ],
    },
    Index {
        table: "messages",
        name: "messages_tenant_idx",
    },
    Index {
        table: "messages",
        name: "messages_delivered_idx",
    },
    Hypertable {
        name: "message_stats_15m",
        time_column: "bucket",
    },
    Index {
        table: "message_stats_15m",
        name: "message_stats_15m_read_idx",
    },
    Hypertable {
        name: "message_engagement_15m",
        time_column: "bucket",
    },
    Index {
        table: "message_engagement_15m",
        name: "message_engagement_15m_read_idx",
    },
    Hypertable {
        name: "message_latency_15m",
        time_column: "bucket",
    },
    Index {
        table: "message_latency_15m",
        name: "message_latency_15m_read_idx",
    },
    Table {
        name: "message_rollup_15m",
        columns: ROLLUP_COLUMNS,
    },
    Hypertable {
        name: "message_rollup_15m",
        time_column: "bucket",
    },
    Index {
        table: "message_rollup_15m",
        name: "message_rollup_15m_counts_idx",
    },
    Table {
        name: "message_rollup_1h",
        columns: ROLLUP_COLUMNS,
    },
    Hypertable {
        name: "message_rollup_1h",
        time_column: "bucket",
    },
    Index {
        table: "message_rollup_1h",
        name: "message_rollup_1h_counts_idx",
    },
    Table {
        name: "message_rollup_1d",
        columns: ROLLUP_COLUMNS,
    },
    Hypertable {
        name: "message_rollup_1d",
        time_column: "bucket",
    },
    Index {
        table: "message_rollup_1d",
        name: "message_rollup_1d_counts_idx",
    },
    Function { name: "herald_add" },
    Function {
        name: "herald_sketch_add",
    },
    Function {
        name: "herald_sketch_bins",
    },
    Function {
        name: "herald_sketch_of",
    },
    Table {
        name: "dead_letters",
        columns: &[
            "version",
            "shard",
            "message_id",
            "state",
            "tenant_id",
            "recorded_at",
        ],
    },
    Index {
        table: "dead_letters",
        name: "dead_letters_tenant_idx",
    },
];
