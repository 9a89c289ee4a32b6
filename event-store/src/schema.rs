//! What the event store's code relies on in the schema, checked after every migration run
//! (`migrations::schema`): the columns postgres-es and the appender write, the indexes the
//! relay's commit-safe reads and the position lookups need, and the shard functions.

use migrations::Requirement::{self, Function, Index, Table};

/// The event store's requirements.
pub const REQUIRED: &[Requirement] = &[
    Table {
        name: "events",
        columns: &[
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "event_type",
            "event_version",
            "payload",
            "metadata",
            "global_position",
            "tx_id",
            "recorded_at",
            "shard_key",
        ],
    },
    Index {
        table: "events",
        name: "events_pkey",
    },
    Index {
        table: "events",
        name: "events_tx_cursor_idx",
    },
    Index {
        table: "events",
        name: "events_global_position_key",
    },
    Function {
        name: "herald_shard",
    },
    Function {
        name: "herald_shard_key",
    },
    Function {
        name: "herald_notify_events",
    },
    Table {
        name: "snapshots",
        columns: &["aggregate_type", "aggregate_id", "last_sequence", "payload"],
    },
];
