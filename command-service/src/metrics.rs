//! The command service's own metrics, on the app's registry (see
//! [`service_kit::metrics`]): commands by kind and outcome, their latency, and events
//! appended. Labels are closed sets: never a tenant or message id.

use std::time::Instant;

use axum::http::StatusCode;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use service_kit::http_error::ApiError;
use service_kit::Metrics;

use crate::commands::Outcome;

/// Name of the command counter.
pub const COMMANDS_TOTAL: &str = "herald_commands_total";
/// Name of the command latency histogram.
pub const COMMAND_DURATION_SECONDS: &str = "herald_command_duration_seconds";
/// Name of the appended-events counter.
pub const EVENTS_APPENDED_TOTAL: &str = "herald_events_appended_total";
/// Name of the group-commit size histogram.
pub const GROUP_COMMIT_COMMANDS: &str = "herald_group_commit_commands";
/// Name of the counter of commands written alone after their group failed.
pub const GROUP_COMMIT_ISOLATED_TOTAL: &str = "herald_group_commit_isolated_total";

/// Buckets of [`GROUP_COMMIT_COMMANDS`]: 1 to the appender's 2,000-row cap.
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

/// Which command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Submit a message.
    Submit,
    /// Record a provider observation.
    Observe,
    /// Cancel a message.
    Cancel,
}

impl Kind {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Submit => "submit",
            Kind::Observe => "observe",
            Kind::Cancel => "cancel",
        }
    }
}

/// The command metrics, cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandMetrics {
    commands: IntCounterVec,
    duration: HistogramVec,
    events: IntCounter,
    group: Histogram,
    isolated: IntCounter,
}

impl CommandMetrics {
    /// Registers the command metrics on `metrics`' registry.
    pub fn register(metrics: &Metrics) -> Self {
        Self {
            commands: metrics.counter_vec(
                COMMANDS_TOTAL,
                "Commands executed, by kind (submit, observe, cancel) and outcome (accepted, \
                 unchanged, rejected, conflict, error).",
                &["kind", "outcome"],
            ),
            duration: metrics.histogram_vec(
                COMMAND_DURATION_SECONDS,
                "Time to execute one command (validate, load, decide, commit), by kind.",
                &["kind"],
                &[],
            ),
            events: metrics.counter(
                EVENTS_APPENDED_TOTAL,
                "Events appended to the event store by commands.",
            ),
            group: metrics.histogram(
                GROUP_COMMIT_COMMANDS,
                "Per committed command: how many commands shared its transaction (group commit).",
                GROUP_BUCKETS,
            ),
            isolated: metrics.counter(
                GROUP_COMMIT_ISOLATED_TOTAL,
                "Commands written in a transaction of their own because the group they were in \
                 failed (a data error of another command: isolation, not an outage).",
            ),
        }
    }

    /// Records one command of `kind` that started at `started` and ended with `result`;
    /// `appended` is the number of events it committed.
    pub fn record(
        &self,
        kind: Kind,
        started: Instant,
        result: &Result<Outcome, ApiError>,
        appended: usize,
    ) {
        let outcome = outcome_label(result);
        self.commands
            .with_label_values(&[kind.as_str(), outcome])
            .inc();
        self.duration
            .with_label_values(&[kind.as_str()])
            .observe(started.elapsed().as_secs_f64());
        if appended > 0 {
            self.events.inc_by(appended as u64);
        }
        if let Ok(Some(committed)) = result.as_ref().map(|o| o.committed) {
            self.group.observe(committed.group as f64);
            if committed.isolated {
                self.isolated.inc();
            }
        }
    }
}

/// The `outcome` label:
/// * `accepted`: events were recorded;
/// * `unchanged`: accepted but nothing new (a replayed submit, a duplicate observation);
/// * `rejected`: the domain or the input refused it (400, 404, 422);
/// * `conflict`: 409, an idempotency key reused with another body, or concurrent writers
///   that kept winning;
/// * `error`: the store was unavailable or failed (5xx).
pub fn outcome_label(result: &Result<Outcome, ApiError>) -> &'static str {
    match result {
        Ok(outcome) if outcome.answer.changed && !outcome.replayed => "accepted",
        Ok(_) => "unchanged",
        Err(e) if e.status == StatusCode::CONFLICT => "conflict",
        Err(e) if e.status.is_server_error() => "error",
        Err(_) => "rejected",
    }
}
