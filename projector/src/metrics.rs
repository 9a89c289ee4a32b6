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
use redis::{AsyncConnectionConfig, Value};
use service_kit::health::Check;
use service_kit::Metrics;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::envelope::{value_items, value_map, value_text};
use crate::settings::ProjectorSettings;
use crate::shard::{group_name, projection_name, stream_key, Cursor};

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

/// How far a read-model version trails the event store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lag {
    /// Per shard: events not yet applied, and the oldest one's commit time.
    pub shards: Vec<(i64, Option<DateTime<Utc>>)>,
}

impl Lag {
    /// Events not yet applied, over all shards.
    pub fn events(&self) -> i64 {
        self.shards.iter().map(|(n, _)| n).sum()
    }

    /// The oldest unapplied event's commit time.
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        self.shards.iter().filter_map(|(_, t)| *t).min()
    }

    /// Age of the oldest unapplied event at `now` (zero when caught up).
    pub fn age(&self, now: DateTime<Utc>) -> Duration {
        self.oldest()
            .map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or_default())
    }
}

/// Lag counts stop here (per shard and part): beyond it, "at least" is all a gauge or a
/// readiness answer needs to say, and the measurement stays cheap.
pub const LAG_COUNT_CAP: i64 = 100_000;

/// The events of the event store the active read model does not reflect yet, per shard.
///
/// Cheap while the projector keeps up: per shard, the events published but not yet
/// projected lie between its checkpoint and the relay's head of that shard (a shard whose
/// checkpoint reached its head costs no scan), and the events not yet published lie past
/// the relay's cursor (few while the relay keeps up). Both scans run on the cursor index
/// and stop at [`LAG_COUNT_CAP`] rows.
pub async fn projector_lag(
    events_db: &PgPool,
    read_db: &PgPool,
    shards: u32,
) -> Result<Lag, sqlx::Error> {
    let version: i32 = sqlx::query_scalar("SELECT version FROM read_model_active")
        .fetch_one(read_db)
        .await?;
    version_lag(events_db, read_db, version, shards).await
}

/// [`projector_lag`] of read-model `version` (the query service measures the version it
/// is reading, which a rebuild may switch away from meanwhile).
pub async fn version_lag(
    events_db: &PgPool,
    read_db: &PgPool,
    version: i32,
    shards: u32,
) -> Result<Lag, sqlx::Error> {
    let checkpoints: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection_name(version))
    .fetch_all(read_db)
    .await?;
    let heads: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position FROM relay_shard_heads WHERE relay = $1",
    )
    .bind(crate::relay::RELAY_NAME)
    .fetch_all(events_db)
    .await?;
    let relayed = relay_cursor(events_db).await?;
    let per_shard = |rows: &[(i32, i64, i64)]| {
        let mut out = vec![Cursor::ZERO; shards as usize];
        for (shard, tx, pos) in rows {
            if let Some(slot) = usize::try_from(*shard).ok().and_then(|i| out.get_mut(i)) {
                *slot = Cursor::new(*tx, *pos);
            }
        }
        out
    };
    let (checkpoints, heads) = (per_shard(&checkpoints), per_shard(&heads));
    let mut lag = Lag {
        shards: vec![(0, None); shards as usize],
    };
    let mut add = |shard: usize, n: i64, t: Option<DateTime<Utc>>| {
        if let Some((count, oldest)) = lag.shards.get_mut(shard) {
            *count += n;
            *oldest = match (*oldest, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    };

    // Published, not yet projected: (checkpoint, head] of each lagging shard.
    for (shard, (cp, head)) in checkpoints.iter().zip(&heads).enumerate() {
        if cp >= head {
            continue;
        }
        let (n, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(recorded_at) FROM (
               SELECT recorded_at FROM events
                WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
                  AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4)
                  AND herald_shard(aggregate_id, $5) = $6
                ORDER BY tx_id, global_position
                LIMIT $7) lagging",
        )
        .bind(cp.tx_id)
        .bind(cp.global_position)
        .bind(head.tx_id)
        .bind(head.global_position)
        .bind(shards as i32)
        .bind(shard as i32)
        .bind(LAG_COUNT_CAP)
        .fetch_one(events_db)
        .await?;
        add(shard, n, oldest);
    }

    // Not yet published (and not caught up from the event store either): past the relay's
    // cursor and past the shard's checkpoint.
    let unpublished: Vec<(i32, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT herald_shard(aggregate_id, $3), count(*), min(recorded_at) FROM (
           SELECT aggregate_id, tx_id, global_position, recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            ORDER BY tx_id, global_position
            LIMIT $4) unpublished
          WHERE (tx_id::text::bigint, global_position) >
                (($5::bigint[])[herald_shard(aggregate_id, $3) + 1],
                 ($6::bigint[])[herald_shard(aggregate_id, $3) + 1])
          GROUP BY 1",
    )
    .bind(relayed.tx_id)
    .bind(relayed.global_position)
    .bind(shards as i32)
    .bind(LAG_COUNT_CAP)
    .bind(checkpoints.iter().map(|c| c.tx_id).collect::<Vec<_>>())
    .bind(
        checkpoints
            .iter()
            .map(|c| c.global_position)
            .collect::<Vec<_>>(),
    )
    .fetch_all(events_db)
    .await?;
    for (shard, n, oldest) in unpublished {
        if let Ok(shard) = usize::try_from(shard) {
            add(shard, n, oldest);
        }
    }
    for (count, _) in &mut lag.shards {
        *count = (*count).min(LAG_COUNT_CAP);
    }
    Ok(lag)
}

async fn relay_cursor(events_db: &PgPool) -> Result<Cursor, sqlx::Error> {
    let cursor: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, global_position FROM relay_checkpoint WHERE relay = $1")
            .bind(crate::relay::RELAY_NAME)
            .fetch_optional(events_db)
            .await?;
    Ok(cursor.map_or(Cursor::ZERO, |(a, b)| Cursor::new(a, b)))
}

/// Committed events after the relay's stored cursor: how many (at most
/// [`LAG_COUNT_CAP`]), and the oldest's commit time. Includes events a still-open older
/// transaction holds back behind the horizon (they wait too).
pub async fn relay_lag(events_db: &PgPool) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let c = relay_cursor(events_db).await?;
    sqlx::query_as(
        "SELECT count(*), min(recorded_at) FROM (
           SELECT recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            ORDER BY tx_id, global_position
            LIMIT $3) unpublished",
    )
    .bind(c.tx_id)
    .bind(c.global_position)
    .bind(LAG_COUNT_CAP)
    .fetch_one(events_db)
    .await
}

/// The readiness check `projector_lag`: fails while the oldest event not yet applied to
/// the active read model is older than `bound`.
pub fn lag_check(events_db: PgPool, read_db: PgPool, shards: u32, bound: Duration) -> Check {
    Check::new("projector_lag", move || {
        let (events_db, read_db) = (events_db.clone(), read_db.clone());
        async move {
            let lag = projector_lag(&events_db, &read_db, shards)
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
    /// Redis.
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
    ) -> Result<(), String> {
        let m = &self.metrics;
        let now = Utc::now();
        if self.settings.relay_enabled {
            let (n, oldest) = relay_lag(&self.events_db)
                .await
                .map_err(|e| format!("relay lag: {e}"))?;
            m.relay_lag_events.set(n);
            m.relay_lag_seconds
                .set(oldest.map_or(0.0, |t| age_secs(now, t)));
            let horizon = crate::relay::horizon_age(&self.events_db)
                .await
                .map_err(|e| format!("horizon age: {e}"))?;
            m.horizon_age.set(horizon.as_secs_f64());
        }
        let lag = projector_lag(&self.events_db, &self.read_db, self.settings.shards)
            .await
            .map_err(|e| format!("projector lag: {e}"))?;
        for (shard, (n, _)) in lag.shards.iter().enumerate() {
            m.lag_events
                .with_label_values(&[&shard.to_string()])
                .set(*n);
        }
        let live: Vec<i32> =
            sqlx::query_scalar("SELECT version FROM read_model_versions WHERE state = 'live'")
                .fetch_all(&self.read_db)
                .await
                .map_err(|e| format!("live versions: {e}"))?;
        let parked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dead_letters WHERE state = 'parked' AND version = ANY($1)",
        )
        .bind(&live)
        .fetch_one(&self.read_db)
        .await
        .map_err(|e| format!("dead letters: {e}"))?;
        m.dead_letters.set(parked);

        if redis.is_none() {
            let conn = self
                .redis
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(Some(Duration::from_secs(5))),
                )
                .await
                .map_err(|e| format!("redis: {e}"))?;
            *redis = Some(conn);
        }
        let conn = redis.as_mut().expect("just set");
        let wanted: BTreeSet<String> = live.iter().map(|v| group_name(*v)).collect();
        let mut seen = BTreeSet::new();
        for shard in 0..self.settings.shards {
            let key = stream_key(&self.prefix, shard);
            for (group, pending) in pending_by_group(conn, &key).await? {
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

/// `XINFO GROUPS key`: each group's pending count (empty when the stream does not exist).
pub async fn pending_by_group(
    redis: &mut MultiplexedConnection,
    key: &str,
) -> Result<Vec<(String, i64)>, String> {
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(redis)
        .await
    {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(format!("XINFO GROUPS: {e}")),
    };
    Ok(value_items(&groups)
        .iter()
        .filter_map(|g| {
            let m = value_map(g);
            let name = m.get("name").and_then(value_text)?;
            let pending = m
                .get("pending")
                .and_then(value_text)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            Some((name, pending))
        })
        .collect())
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

    #[test]
    fn lag_sums_shards_and_ages_the_oldest() {
        let t = Utc::now();
        let lag = Lag {
            shards: vec![
                (2, Some(t - chrono::Duration::seconds(5))),
                (0, None),
                (1, Some(t - chrono::Duration::seconds(9))),
            ],
        };
        assert_eq!(lag.events(), 3);
        assert_eq!(lag.age(t), Duration::from_secs(9));
        assert_eq!(Lag::default().age(t), Duration::ZERO);
    }
}
