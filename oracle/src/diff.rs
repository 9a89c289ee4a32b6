//! Differences between what the oracle expects and what a read model holds, counted per
//! table, with the first few kept for the report.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::{EventRow, MessageRow};

/// One cell (or one whole row) that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The table (or `events` for the event store itself).
    pub table: &'static str,
    /// The row: its key columns.
    pub key: String,
    /// The column, or `(row)` when the row is missing or unexpected.
    pub column: String,
    /// What the event store implies.
    pub expected: String,
    /// What the read model holds.
    pub actual: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}: expected {}, found {}",
            self.table, self.key, self.column, self.expected, self.actual
        )
    }
}

/// Every difference found, counted per table; the first `keep` in full.
#[derive(Debug, Clone, Default)]
pub struct Differences {
    /// Count per table.
    pub per_table: BTreeMap<&'static str, u64>,
    /// The first ones, in the order found.
    pub first: Vec<Difference>,
    keep: usize,
}

impl Differences {
    /// Keeps the first `keep` differences in full.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            ..Self::default()
        }
    }

    /// Counts `d` (and keeps it while fewer than `keep` are kept).
    pub fn add(&mut self, d: Difference) {
        *self.per_table.entry(d.table).or_default() += 1;
        if self.first.len() < self.keep {
            self.first.push(d);
        }
    }

    /// How many were found.
    pub fn total(&self) -> u64 {
        self.per_table.values().sum()
    }

    /// Compares two versions of one row column by column (`None`: the row is absent).
    pub fn rows<R: Columns>(
        &mut self,
        table: &'static str,
        key: &str,
        expected: Option<&R>,
        actual: Option<&R>,
    ) {
        let difference = |column: &str, expected: String, actual: String| Difference {
            table,
            key: key.to_string(),
            column: column.to_string(),
            expected,
            actual,
        };
        match (expected, actual) {
            (None, None) => {}
            (Some(_), None) => self.add(difference("(row)", "a row".into(), "none".into())),
            (None, Some(_)) => self.add(difference("(row)", "no row".into(), "a row".into())),
            (Some(e), Some(a)) => {
                for ((column, want), (_, have)) in e.cells().into_iter().zip(a.cells()) {
                    if want != have {
                        self.add(difference(column, want, have));
                    }
                }
            }
        }
    }
}

/// A row as named cells, rendered for comparison and display.
pub trait Columns {
    /// `(column, rendered value)` for every compared column, in table order.
    fn cells(&self) -> Vec<(&'static str, String)>;
}

macro_rules! cells {
    ($row:expr; $($field:ident),* $(,)?) => {
        vec![$((stringify!($field), format!("{:?}", $row.$field))),*]
    };
}

impl Columns for EventRow {
    fn cells(&self) -> Vec<(&'static str, String)> {
        cells!(self; tenant_id, message_id, sequence, global_position, tx_id,
            event_type, event_version, status, previous_status, status_changed, channel,
            provider, tags, occurred_at, received_at, recorded_at, latency_ms_from_submit,
            latency_ms_from_dispatch, dedupe_key, engagement, engagement_first, correlation_id,
            causation_id, traceparent)
    }
}

impl Columns for MessageRow {
    fn cells(&self) -> Vec<(&'static str, String)> {
        cells!(self; message_id, tenant_id, channel, provider, tags, status, submitted_at,
            scheduled_at, queued_at, dispatched_at, deferred_at, delivered_at,
            delivery_inferred, bounced_at, failed_at, dropped_at, expired_at, cancelled_at,
            opened_at, clicked_at, complained_at, unsubscribed_at, latency_ms_from_submit,
            latency_ms_from_dispatch, last_sequence, last_event_type, last_occurred_at)
    }
}

/// The columns of `message_events` the oracle compares, in [`EventRow`] order.
pub const EVENT_COLUMNS: &str = "tenant_id, message_id, sequence, global_position, tx_id, \
     event_type, event_version, status, previous_status, status_changed, channel, provider, \
     tags, occurred_at, received_at, recorded_at, latency_ms_from_submit, \
     latency_ms_from_dispatch, dedupe_key, engagement, engagement_first, \
     correlation_id, causation_id, traceparent";

/// The columns of `messages` the oracle compares, in [`MessageRow`] order.
pub const MESSAGE_COLUMNS: &str = "message_id, tenant_id, channel, provider, tags, status, \
     submitted_at, scheduled_at, queued_at, dispatched_at, deferred_at, delivered_at, \
     delivery_inferred, bounced_at, failed_at, dropped_at, expired_at, cancelled_at, \
     opened_at, clicked_at, complained_at, unsubscribed_at, latency_ms_from_submit, \
     latency_ms_from_dispatch, last_sequence, last_event_type, last_occurred_at";

/// Columns of the read-model tables that the oracle deliberately does not compare: the
/// version is the scope itself, and `projected_at` is the projector's wall clock.
pub const NOT_COMPARED: [&str; 2] = ["version", "projected_at"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_are_kept_but_all_are_counted() {
        let mut d = Differences::new(1);
        for i in 0..3 {
            d.add(Difference {
                table: if i == 2 { "messages" } else { "message_events" },
                key: i.to_string(),
                column: "c".into(),
                expected: "1".into(),
                actual: "2".into(),
            });
        }
        assert_eq!(d.total(), 3);
        assert_eq!(d.per_table["message_events"], 2);
        assert_eq!(d.first.len(), 1);
        assert_eq!(
            d.first[0].to_string(),
            "message_events [0] c: expected 1, found 2"
        );
    }
}
