//! The projector's own tuning, read from the environment (documented in
//! `service_kit::config::VARIABLES`, hence in `docs/configuration.md`).

use std::time::Duration;

use service_kit::config::parse_var;
use service_kit::{ConfigError, Settings};

/// Relay and projector settings.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// Number of stream shards (`HERALD_STREAM_SHARDS`, read with the common settings);
    /// relay and projectors must agree.
    pub shards: u32,
    /// Whether this process runs the relay (`HERALD_RELAY_ENABLED`).
    pub relay_enabled: bool,
    /// Events per relay round (`HERALD_RELAY_BATCH`).
    pub relay_batch: i64,
    /// Polling fallback when no notification arrives (`HERALD_RELAY_POLL_MS`).
    pub relay_poll: Duration,
    /// Approximate cap of each stream's length (`HERALD_RELAY_STREAM_MAXLEN`).
    pub stream_maxlen: u64,
    /// How often acknowledged entries are trimmed (`HERALD_RELAY_TRIM_INTERVAL_MS`).
    pub trim_interval: Duration,
    /// Whether this process runs projector consumers (`HERALD_PROJECTOR_ENABLED`).
    pub projector_enabled: bool,
    /// Stream consumers per read-model version in this process
    /// (`HERALD_PROJECTOR_WORKERS`); they share the shards like replicas do.
    pub workers: usize,
    /// Entries per batch (`HERALD_PROJECTOR_BATCH`).
    pub batch: usize,
    /// Longest wait of one blocking read (`HERALD_PROJECTOR_BLOCK_MS`).
    pub block: Duration,
    /// Failed deliveries before an event is parked (`HERALD_PROJECTOR_MAX_FAILURES`).
    pub max_failures: u32,
    /// Idle time before another consumer's pending entries are claimed
    /// (`HERALD_PROJECTOR_CLAIM_MIN_IDLE_MS`).
    pub claim_min_idle: Duration,
    /// Readiness bound: `projector_lag` fails while the oldest event not yet applied to the
    /// active read model is older than this (`HERALD_READY_MAX_LAG_SECONDS`).
    pub ready_max_lag: Duration,
    /// How often the projector compares the active read model's generation with the
    /// schema's and looks for versions to retire (`HERALD_READ_MODEL_CHECK_MS`).
    pub generation_check: Duration,
    /// How long a replaced read-model version stays (for queries already under way, and to
    /// switch back by hand) before it is retired (`HERALD_READ_MODEL_RETIRE_AFTER_S`).
    pub retire_after: Duration,
    /// Longest a transaction of a rebuild's first pass gathers reads before it writes their
    /// rollups and commits (`HERALD_REBUILD_WINDOW_MS`). Longer windows write each shared
    /// rollup row fewer times; while one is open, relays reading an event store on the same
    /// PostgreSQL cluster wait behind it (the xmin horizon).
    pub rebuild_window: Duration,
    /// Events per read of the event store in a rebuild (20,000). Not an environment
    /// variable: tests shorten it to make windows of many reads out of a few events.
    pub rebuild_read: i64,
    /// How often the sampled metrics (lags, horizon age, pending entries, parked dead
    /// letters) are measured. Not an environment variable: tests shorten it.
    pub metrics_interval: Duration,
}

impl ProjectorSettings {
    /// Reads the process environment; the shard count comes from `settings`.
    pub fn from_env(settings: &Settings) -> Result<Self, ConfigError> {
        Self::from_lookup(settings, |name| std::env::var(name).ok())
    }

    /// Reads through `lookup`; unset variables take the documented defaults.
    pub fn from_lookup(
        settings: &Settings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let ms = |name, default, min, max| -> Result<Duration, ConfigError> {
            parse_var(&lookup, name, default, min, max).map(Duration::from_millis)
        };
        Ok(Self {
            shards: settings.stream_shards,
            relay_enabled: parse_var(&lookup, "HERALD_RELAY_ENABLED", 1u8, 0, 1)? == 1,
            relay_batch: parse_var(&lookup, "HERALD_RELAY_BATCH", 500i64, 1, 10_000)?,
            relay_poll: ms("HERALD_RELAY_POLL_MS", 500u64, 10, 60_000)?,
            stream_maxlen: parse_var(
                &lookup,
                "HERALD_RELAY_STREAM_MAXLEN",
                1_000_000u64,
                1_000,
                1_000_000_000,
            )?,
            trim_interval: ms("HERALD_RELAY_TRIM_INTERVAL_MS", 5_000u64, 100, 3_600_000)?,
            projector_enabled: parse_var(&lookup, "HERALD_PROJECTOR_ENABLED", 1u8, 0, 1)? == 1,
            workers: parse_var(&lookup, "HERALD_PROJECTOR_WORKERS", 1usize, 1, 64)?,
            batch: parse_var(&lookup, "HERALD_PROJECTOR_BATCH", 500usize, 1, 5_000)?,
            block: ms("HERALD_PROJECTOR_BLOCK_MS", 1_000u64, 10, 60_000)?,
            max_failures: parse_var(&lookup, "HERALD_PROJECTOR_MAX_FAILURES", 5u32, 1, 1_000)?,
            claim_min_idle: ms("HERALD_PROJECTOR_CLAIM_MIN_IDLE_MS", 0u64, 0, 3_600_000)?,
            ready_max_lag: Duration::from_secs(parse_var(
                &lookup,
                "HERALD_READY_MAX_LAG_SECONDS",
                60u64,
                1,
                86_400,
            )?),
            generation_check: ms("HERALD_READ_MODEL_CHECK_MS", 10_000u64, 100, 3_600_000)?,
            retire_after: Duration::from_secs(parse_var(
                &lookup,
                "HERALD_READ_MODEL_RETIRE_AFTER_S",
                3_600u64,
                0,
                30 * 86_400,
            )?),
            rebuild_window: ms("HERALD_REBUILD_WINDOW_MS", 5_000u64, 0, 600_000)?,
            rebuild_read: 20_000,
            metrics_interval: Duration::from_secs(5),
        })
    }
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        let settings = Settings::from_lookup(|_| None).expect("defaults are valid");
        Self::from_lookup(&settings, |_| None).expect("defaults are valid")
    }
}
