//! The projector's Prometheus metrics (named in `docs/operations.md`), the sampler that
//! measures the gauges, and the lag readiness check.
//!
//! Counters and histograms move where the work happens: the relay counts what it publishes
//! and says whether it leads; [`crate::project::apply_batch_observed`] observes batch sizes,
//! projected events and their end-to-end lag at the read-model commit; parking counts dead
//! letters. The gauges that describe shared state (lags, the transaction horizon, pending
//! entries, parked dead letters) are sampled every `metrics_interval` by [`sample`] from the
//! event store, the read models and Redis, so every replica reports the same values (take
//! `max` across replicas, never `sum`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{Gauge, Histogram, IntCounter, IntGauge, IntGaugeVec};
use redis::aio::MultiplexedConnection;
use service_kit::health::Check;
use service_kit::Metrics;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::settings::ProjectorSettings;
use crate::stream::{group_name, stream_key};

/// Events the relay published.
pub const RELAY_PUBLISHED_TOTAL: &str = "herald_relay_published_total";
/// Committed events not yet published.
pub const RELAY_LAG_EVENTS: &str = "herald_relay_lag_events";
/// Age of the oldest committed, unpublished event.
pub const RELAY_LAG_SECONDS: &str = "herald_relay_lag_seconds";
/// Age of the transaction horizon.
pub const RELAY_HORIZON_AGE_SECONDS: &str = "herald_relay_horizon_age_seconds";
/// 1 on the relay leader.
pub const RELAY_LEADER: &str = "herald_relay_leader";
/// Unacknowledged entries per shard and consumer group.
pub const STREAM_PENDING_ENTRIES: &str = "herald_stream_pending_entries";
/// Entries per read-model transaction.
pub const PROJECTOR_BATCH_SIZE: &str = "herald_projector_batch_size";
/// Events applied to the read models.
pub const PROJECTOR_EVENTS_PROJECTED_TOTAL: &str = "herald_projector_events_projected_total";
/// Events not yet applied, per shard.
pub const PROJECTOR_LAG_EVENTS: &str = "herald_projector_lag_events";
/// Event commit to read-model commit.
pub const PROJECTOR_LAG_SECONDS: &str = "herald_projector_lag_seconds";
/// Events parked.
pub const DEAD_LETTERS_TOTAL: &str = "herald_dead_letters_total";
/// Events parked now.
pub const DEAD_LETTERS: &str = "herald_dead_letters";

/// Every metric name the projector registers (besides the HTTP ones every service has).
pub const NAMES: [&str; 12] = [
    RELAY_PUBLISHED_TOTAL,
    RELAY_LAG_EVENTS,
    RELAY_LAG_SECONDS,
    RELAY_HORIZON_AGE_SECONDS,
    RELAY_LEADER,
    STREAM_PENDING_ENTRIES,
    PROJECTOR_BATCH_SIZE,
    PROJECTOR_EVENTS_PROJECTED_TOTAL,
    PROJECTOR_LAG_EVENTS,
    PROJECTOR_LAG_SECONDS,
    DEAD_LETTERS_TOTAL,
    DEAD_LETTERS,
];

/// Buckets of the end-to-end lag histogram (seconds): 5 ms to 10 minutes.
pub const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Handles on the projector's metrics. Cheap to share (`Arc`).
#[derive(Clone)]
pub struct ProjectorMetrics {
    /// [`RELAY_PUBLISHED_TOTAL`].
    pub relay_published: IntCounter,
    /// [`RELAY_LAG_EVENTS`].
    pub relay_lag_events: IntGauge,
    /// [`RELAY_LAG_SECONDS`].
    pub relay_lag_seconds: Gauge,
    /// [`RELAY_HORIZON_AGE_SECONDS`].
    pub horizon_age: Gauge,
    /// [`RELAY_LEADER`].
    pub relay_leader: IntGauge,
    /// [`STREAM_PENDING_ENTRIES`], by `shard` and `group`.
    pub stream_pending: IntGaugeVec,
    /// [`PROJECTOR_BATCH_SIZE`].
    pub batch_size: Histogram,
    /// [`PROJECTOR_EVENTS_PROJECTED_TOTAL`].
    pub events_projected: IntCounter,
    /// [`PROJECTOR_LAG_EVENTS`], by `shard`.
    pub lag_events: IntGaugeVec,
    /// [`PROJECTOR_LAG_SECONDS`].
    pub lag_seconds: Histogram,
    /// [`DEAD_LETTERS_TOTAL`].
    pub dead_letters_total: IntCounter,
    /// [`DEAD_LETTERS`].
    pub dead_letters: IntGauge,
}

impl std::fmt::Debug for ProjectorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectorMetrics").finish_non_exhaustive()
    }
}

/// Batch-size buckets: 1, 2, 5, 10, 20, 50, ... below `max`, then `max`.
pub fn batch_buckets(max: usize) -> Vec<f64> {
    let max = max.max(1) as f64;
    let mut out = Vec::new();
    let mut decade = 1.0;
    'outer: loop {
        for step in [1.0, 2.0, 5.0] {
            let b = step * decade;
            if b >= max {
                break 'outer;
            }
            out.push(b);
        }
        decade *= 10.0;
    }
    out.push(max);
    out
}

impl ProjectorMetrics {
    /// Registers every projector metric on `metrics` (the app's registry).
    pub fn register(metrics: &Metrics, settings: &ProjectorSettings) -> Self {
        Self {
            relay_published: metrics.counter(
                RELAY_PUBLISHED_TOTAL,
                "Events the relay published to the Redis streams.",
            ),
            relay_lag_events: metrics.int_gauge(
                RELAY_LAG_EVENTS,
                "Events committed to the event store and not yet published (sampled).",
            ),
            relay_lag_seconds: metrics.gauge(
                RELAY_LAG_SECONDS,
                "Age of the oldest committed event not yet published, 0 when caught up (sampled).",
            ),
            horizon_age: metrics.gauge(
                RELAY_HORIZON_AGE_SECONDS,
                "How long the oldest transaction holding the relay's horizon back has been open (sampled).",
            ),
            relay_leader: metrics.int_gauge(
                RELAY_LEADER,
                "1 while this replica holds the relay leadership, else 0.",
            ),
            stream_pending: metrics.int_gauge_vec(
                STREAM_PENDING_ENTRIES,
                "Stream entries delivered to the consumer group and not yet acknowledged, per shard (sampled).",
                &["shard", "group"],
            ),
            batch_size: metrics.histogram(
                PROJECTOR_BATCH_SIZE,
                "Stream entries applied in one read-model transaction.",
                &batch_buckets(settings.batch),
            ),
            events_projected: metrics.counter(
                PROJECTOR_EVENTS_PROJECTED_TOTAL,
                "Events applied to the read models.",
            ),
            lag_events: metrics.int_gauge_vec(
                PROJECTOR_LAG_EVENTS,
                "Events of the shard not yet applied to the active read model (sampled).",
                &["shard"],
            ),
            lag_seconds: metrics.histogram(
                PROJECTOR_LAG_SECONDS,
                "Per event: from its commit in the event store to the read-model commit that applied it.",
                LAG_BUCKETS,
            ),
            dead_letters_total: metrics.counter(
                DEAD_LETTERS_TOTAL,
                "Events parked in dead_letters after repeated failures.",
            ),
            dead_letters: metrics.int_gauge(
                DEAD_LETTERS,
                "Events currently parked in dead_letters of live read-model versions (sampled).",
            ),
        }
    }

    /// Metrics on a registry of their own that nothing serves (tools, tests).
    pub fn detached(settings: &ProjectorSettings) -> Arc<Self> {
        Arc::new(Self::register(&Metrics::new(crate::SERVICE), settings))
    }
}

/// The readiness check `projector_lag`: fails while the oldest event not yet applied to
/// the active read model is older than `bound`.
pub fn lag_check(events_db: PgPool, read_db: PgPool, shards: u32, bound: Duration) -> Check {
    Check::new("projector_lag", move || {
        let (events_db, read_db) = (events_db.clone(), read_db.clone());
        async move {
            let lag = read_model::lag::of_active(&events_db, &read_db, shards)
                .await
                .map_err(|e| format!("cannot measure the lag: {e}"))?;
            let age = lag.age(Utc::now());
            if age > bound {
                Err(format!(
                    "{} events not yet projected, the oldest committed {:.1} s ago (bound {} s)",
                    lag.events(),
                    age.as_secs_f64(),
                    bound.as_secs()
                ))
            } else {
                Ok(())
            }
        }
    })
}

/// What the sampler reads from.
pub struct Sampler {
    /// Event store.
    pub events_db: PgPool,
    /// Read models.
    pub read_db: PgPool,
    /// Redis, for the pending counts of the consumer groups.
    pub redis: redis::Client,
    /// Key prefix.
    pub prefix: String,
    /// Tuning (shards, interval, whether this process relays).
    pub settings: ProjectorSettings,
    /// Where the samples go.
    pub metrics: Arc<ProjectorMetrics>,
}

impl Sampler {
    /// Samples every `metrics_interval` until `stop`. Failures are logged and retried.
    pub async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.settings.metrics_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut redis: Option<MultiplexedConnection> = None;
        let mut groups: BTreeSet<(String, String)> = BTreeSet::new();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match self.sample(&mut redis, &mut groups).await {
                Ok(()) => failing = false,
                Err(error) => {
                    redis = None;
                    if !failing {
                        tracing::warn!(%error, "sampling projector metrics failed; will retry");
                    }
                    failing = true;
                }
            }
        }
    }

    async fn sample(
        &self,
        redis: &mut Option<MultiplexedConnection>,
        groups: &mut BTreeSet<(String, String)>,
    ) -> crate::Result<()> {
        let m = &self.metrics;
        let now = Utc::now();
        if self.settings.relay_enabled {
            let (n, oldest) = read_model::lag::relay(&self.events_db).await?;
            m.relay_lag_events.set(n);
            m.relay_lag_seconds
                .set(oldest.map_or(0.0, |t| age_secs(now, t)));
            let horizon = event_store::stored::horizon_age(&self.events_db).await?;
            m.horizon_age.set(horizon.as_secs_f64());
        }
        let lag = read_model::lag::of_active(&self.events_db, &self.read_db, self.settings.shards)
            .await?;
        for (shard, (n, _)) in lag.shards.iter().enumerate() {
            m.lag_events
                .with_label_values(&[&shard.to_string()])
                .set(*n);
        }
        let live = read_model::versions::live(&self.read_db).await?;
        m.dead_letters
            .set(read_model::dead_letters::parked_in(&self.read_db, &live).await?);

        if redis.is_none() {
            *redis = Some(crate::stream::connect(&self.redis, Duration::from_secs(5)).await?);
        }
        let conn = redis.as_mut().expect("just set");
        let wanted: BTreeSet<String> = live.iter().map(|v| group_name(*v)).collect();
        let mut seen = BTreeSet::new();
        for shard in 0..self.settings.shards {
            let key = stream_key(&self.prefix, shard);
            for (group, pending, _) in crate::stream::groups(conn, &key).await? {
                if wanted.contains(&group) {
                    let labels = (shard.to_string(), group);
                    m.stream_pending
                        .with_label_values(&[&labels.0, &labels.1])
                        .set(pending);
                    seen.insert(labels);
                }
            }
        }
        // Groups of retired versions (or lost streams) stop being reported.
        for (shard, group) in groups.difference(&seen) {
            let _ = m.stream_pending.remove_label_values(&[shard, group]);
        }
        *groups = seen;
        Ok(())
    }
}

fn age_secs(now: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    ((now - t).num_milliseconds().max(0) as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_buckets_run_from_one_to_the_batch_size() {
        assert_eq!(
            batch_buckets(500),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        );
        assert_eq!(
            batch_buckets(100),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        assert_eq!(batch_buckets(1), vec![1.0]);
        assert_eq!(batch_buckets(3), vec![1.0, 2.0, 3.0]);
    }
}
