//! Configuration from environment variables.
//!
//! Every variable any Herald service reads is listed in [`VARIABLES`], which is also the
//! source of `docs/configuration.md`'s table (a test keeps the two in step). Defaults match
//! what `timescale/setup.sh` starts, so a service run with no environment at all talks to the
//! local system.

use std::net::SocketAddr;
use std::time::Duration;

/// One documented environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, as text ("" when unset means "off").
    pub default: &'static str,
    /// What it controls.
    pub help: &'static str,
}

/// Every environment variable Herald reads, with its default and meaning.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "HERALD_DATABASE_URL",
        default: "postgres://postgres@127.0.0.1:55432/herald",
        help: "Event store database (TimescaleDB/PostgreSQL).",
    },
    Variable {
        name: "HERALD_READ_DATABASE_URL",
        default: "",
        help: "Read-model database; empty means the same as HERALD_DATABASE_URL.",
    },
    Variable {
        name: "HERALD_DB_MAX_CONNECTIONS",
        default: "16",
        help: "Upper bound of each service's database pool.",
    },
    Variable {
        name: "HERALD_DB_ACQUIRE_TIMEOUT_MS",
        default: "5000",
        help: "How long a request waits for a pooled connection before failing with 503.",
    },
    Variable {
        name: "HERALD_REDIS_URL",
        default: "redis://127.0.0.1:6379",
        help: "Redis used as the event transport (Streams).",
    },
    Variable {
        name: "HERALD_REDIS_PREFIX",
        default: "herald",
        help: "Prefix of every Redis key Herald writes, e.g. `herald:events:0`.",
    },
    Variable {
        name: "HERALD_PUSHGATEWAY_URL",
        default: "http://127.0.0.1:59091",
        help: "Prometheus Pushgateway base URL; empty disables pushing.",
    },
    Variable {
        name: "HERALD_INSTANCE_ID",
        default: "",
        help:
            "Stable replica id (Pushgateway `instance`, consumer name); empty means the host name.",
    },
    Variable {
        name: "HERALD_COMMAND_ADDR",
        default: "127.0.0.1:8080",
        help: "Listen address of the command service.",
    },
    Variable {
        name: "HERALD_QUERY_ADDR",
        default: "127.0.0.1:8081",
        help: "Listen address of the query service.",
    },
    Variable {
        name: "HERALD_PROJECTOR_ADDR",
        default: "127.0.0.1:8082",
        help: "Listen address of the projector's health and metrics endpoint.",
    },
    Variable {
        name: "HERALD_COMMAND_MAX_CONCURRENT_BATCHES",
        default: "4",
        help: "Batch requests (up to 16 MiB each) one command service reads and runs at once; more wait up to 5 s, then get 503 `busy`.",
    },
    Variable {
        name: "HERALD_QUERY_MAX_CONCURRENT_STATS",
        default: "4",
        help: "Statistics answers one query service computes and sends at once; more wait up to 5 s, then get 503 `busy`. With the answer bounds this bounds the service's memory (docs/query-api.md).",
    },
    Variable {
        name: "HERALD_MIGRATION_LOCK_WAIT_MS",
        default: "60000",
        help: "How long start-up waits for another process's migration run.",
    },
    Variable {
        name: "HERALD_MAX_IN_FLIGHT",
        default: "256",
        help: "Requests one service process handles at once; more wait up to 5 s, then get 503 `busy`. Bounds what concurrent requests can hold.",
    },
    Variable {
        name: "HERALD_REQUEST_TIMEOUT_MS",
        default: "30000",
        help: "Longest time one HTTP request may take; slower ones are answered 503 `timeout` (commands are atomic, so nothing is left half-done).",
    },
    Variable {
        name: "HERALD_HEALTH_TIMEOUT_MS",
        default: "2000",
        help: "Bound of each readiness check; a slower dependency counts as down.",
    },
    Variable {
        name: "HERALD_LOG_FORMAT",
        default: "auto",
        help: "`json`, `pretty`, or `auto` (pretty on a terminal, JSON otherwise).",
    },
    Variable {
        name: "HERALD_PUSH_INTERVAL_MS",
        default: "15000",
        help: "How often each service PUTs its metrics to the Pushgateway.",
    },
    Variable {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "",
        help: "OTLP/gRPC endpoint traces are exported to, e.g. `http://127.0.0.1:4317`; empty means no export.",
    },
    Variable {
        name: "RUST_LOG",
        default: "info",
        help: "Log filter (tracing-subscriber EnvFilter syntax).",
    },
    Variable {
        name: "HERALD_STREAM_SHARDS",
        default: "4",
        help: "Number of Redis stream shards (`{prefix}:events:{0..N-1}`); relay and projectors must agree, and changing it needs `projector rebuild`.",
    },
    Variable {
        name: "HERALD_RELAY_ENABLED",
        default: "1",
        help: "`1`: the projector process also runs the relay (one leader at a time, others stand by); `0`: it does not.",
    },
    Variable {
        name: "HERALD_RELAY_BATCH",
        default: "500",
        help: "Events the relay reads and publishes per round.",
    },
    Variable {
        name: "HERALD_RELAY_POLL_MS",
        default: "500",
        help: "Relay polling interval when no LISTEN/NOTIFY wake-up arrives.",
    },
    Variable {
        name: "HERALD_RELAY_STREAM_MAXLEN",
        default: "1000000",
        help: "Approximate hard cap of each stream's length (a projector further behind catches up from the event store).",
    },
    Variable {
        name: "HERALD_RELAY_TRIM_INTERVAL_MS",
        default: "5000",
        help: "How often the relay trims stream entries every live consumer group has acknowledged.",
    },
    Variable {
        name: "HERALD_PROJECTOR_ENABLED",
        default: "1",
        help: "`1`: the projector process runs stream consumers for every live read-model version; `0`: it does not.",
    },
    Variable {
        name: "HERALD_READ_MODEL_CHECK_MS",
        default: "10000",
        help: "How often each projector compares the active read model's generation with the one the schema requires (a migration that changes a read model raises it) and retires versions past their grace period.",
    },
    Variable {
        name: "HERALD_READ_MODEL_RETIRE_AFTER_S",
        default: "3600",
        help: "How long a read-model version stays after queries switched to a newer one, before a projector retires it (deletes its rows, drops its stream groups).",
    },
    Variable {
        name: "HERALD_PROJECTOR_BATCH",
        default: "500",
        help: "Most stream entries the projector applies in one transaction.",
    },
    Variable {
        name: "HERALD_PROJECTOR_BLOCK_MS",
        default: "1000",
        help: "Longest wait of one blocking stream read (XREADGROUP BLOCK).",
    },
    Variable {
        name: "HERALD_REBUILD_WINDOW_MS",
        default: "5000",
        help: "Longest a transaction of a rebuild's first pass gathers reads of the event store before writing their rollups and committing (it also ends at 1,000,000 events or 1,000,000 latency-sketch bins held). Longer windows write each shared rollup row fewer times; while one is open, a relay whose event store is on the same PostgreSQL cluster waits behind it, so live freshness during a rebuild is about one window. `0`: one read per window.",
    },
    Variable {
        name: "HERALD_PROJECTOR_MAX_FAILURES",
        default: "5",
        help: "Failed attempts after which an event is parked in `dead_letters`.",
    },
    Variable {
        name: "HERALD_PROJECTOR_CLAIM_MIN_IDLE_MS",
        default: "0",
        help: "Idle time before a new shard owner XAUTOCLAIMs the previous owner's pending entries (0: at once; the shard lock already proves the owner is gone).",
    },
    Variable {
        name: "HERALD_PROJECTOR_WORKERS",
        default: "1",
        help: "Stream consumers per read-model version in one projector process (named `<instance>-w<k>`); they share the shards with other replicas' consumers, so more apply shards in parallel.",
    },
    Variable {
        name: "HERALD_QUOTA_REQUESTS_PER_SECOND",
        default: "500",
        help: "Default per-tenant quota: authenticated requests per second to each API service (command and query each count their own). Over it the answer is 429 `quota_exceeded` with `Retry-After`. A tenant's own quota (`command-service tenant quota`) overrides every `HERALD_QUOTA_*` default.",
    },
    Variable {
        name: "HERALD_QUOTA_REQUEST_BURST",
        default: "1000",
        help: "Default per-tenant quota: requests a tenant may send at once above its rate (the bucket size).",
    },
    Variable {
        name: "HERALD_QUOTA_CONCURRENT_REQUESTS",
        default: "128",
        help: "Default per-tenant quota: requests of one tenant in flight at once in each service.",
    },
    Variable {
        name: "HERALD_QUOTA_BATCH_EVENTS_PER_SECOND",
        default: "20000",
        help: "Default per-tenant quota: commands per second carried by `POST /v1/batch`; a batch over it is refused whole (429).",
    },
    Variable {
        name: "HERALD_QUOTA_BATCH_EVENT_BURST",
        default: "40000",
        help: "Default per-tenant quota: batch commands a tenant may send at once above its rate; a single batch larger than this can never pass and is refused with 413 `batch_over_quota`.",
    },
    Variable {
        name: "HERALD_QUOTA_CONCURRENT_BATCHES",
        default: "2",
        help: "Default per-tenant quota: batch requests of one tenant running at once (keep it below HERALD_COMMAND_MAX_CONCURRENT_BATCHES so one tenant cannot hold every batch slot).",
    },
    Variable {
        name: "HERALD_QUOTA_CONCURRENT_QUERIES",
        default: "2",
        help: "Default per-tenant quota: statistics queries of one tenant computed at once (keep it below HERALD_QUERY_MAX_CONCURRENT_STATS so one tenant cannot hold every statistics slot).",
    },
    Variable {
        name: "HERALD_QUOTA_QUERY_COST_PER_SECOND",
        default: "200000",
        help: "Default per-tenant quota: statistics cost per second (a query costs the stored rows it reads per series, times 4 per `group_by` dimension; docs/query-api.md).",
    },
    Variable {
        name: "HERALD_QUOTA_QUERY_COST_BURST",
        default: "2000000",
        help: "Default per-tenant quota: statistics cost a tenant may spend at once; one query costing more is refused with 400 `query_over_budget`.",
    },
    Variable {
        name: "HERALD_QUOTA_REPLICAS",
        default: "1",
        help: "Replicas of each API service sharing the tenants' quotas: each process enforces every rate, burst and concurrency divided by this (rounded up, at least 1), with no shared state, so no request ever waits on or fails because of a limiter store.",
    },
    Variable {
        name: "HERALD_QUOTA_METRICS_PER_TENANT",
        default: "0",
        help: "`1`: `herald_quota_refusals_total` carries a `tenant` label (one series per refused tenant and limit); `0`: it does not, keeping the series count bounded.",
    },
    Variable {
        name: "HERALD_READY_MAX_LAG_SECONDS",
        default: "60",
        help: "Projector readiness bound: `/health/ready` fails its `projector_lag` check while the oldest event not yet applied to the active read model is older than this (seconds, 1 to 86400).",
    },
];

/// A variable held a value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub name: &'static str,
    /// The offending value.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured.
    Pretty,
    /// Pretty on a terminal, JSON otherwise.
    Auto,
}

/// Settings every service reads. Service-specific tuning lives in each service's own
/// settings, built from the same lookup.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Event store connection string.
    pub database_url: String,
    /// Read-model connection string (often the same database).
    pub read_database_url: String,
    /// Pool upper bound.
    pub db_max_connections: u32,
    /// Pool acquire timeout.
    pub db_acquire_timeout: Duration,
    /// Redis connection string.
    pub redis_url: String,
    /// Prefix for every Redis key.
    pub redis_prefix: String,
    /// Pushgateway base URL, if pushing is on.
    pub pushgateway_url: Option<String>,
    /// Stable replica id.
    pub instance_id: String,
    /// Interval between pushes to the Pushgateway.
    pub push_interval: Duration,
    /// OTLP/gRPC endpoint for trace export, if exporting is on.
    pub otlp_endpoint: Option<String>,
    /// Command service listen address.
    pub command_addr: SocketAddr,
    /// Query service listen address.
    pub query_addr: SocketAddr,
    /// Projector listen address.
    pub projector_addr: SocketAddr,
    /// Batch requests one command service runs at once.
    pub max_concurrent_batches: usize,
    /// Statistics computations one query service runs at once.
    pub max_concurrent_stats: usize,
    /// Bound on waiting for the migration lock.
    pub migration_lock_wait: Duration,
    /// Requests one process handles at once.
    pub max_in_flight: usize,
    /// Bound on one HTTP request.
    pub request_timeout: Duration,
    /// Bound on each readiness check.
    pub health_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Number of stream shards (`HERALD_STREAM_SHARDS`): relay, projectors and the lag
    /// measurement of every service must agree.
    pub stream_shards: u32,
    /// Per-tenant quotas of tenants that set none of their own (`HERALD_QUOTA_*`).
    pub quota: crate::quota::Limits,
    /// Replicas sharing each tenant's quota (`HERALD_QUOTA_REPLICAS`).
    pub quota_replicas: u32,
    /// Whether refusal metrics carry the tenant (`HERALD_QUOTA_METRICS_PER_TENANT`).
    pub quota_metrics_per_tenant: bool,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests). Unset and
    /// unknown variables fall back to the documented defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| -> (&'static str, String) {
            let value = lookup(name).unwrap_or_else(|| default_of(name).to_string());
            (name, value)
        };
        let database_url = non_empty(get("HERALD_DATABASE_URL"))?;
        let read_database_url = match get("HERALD_READ_DATABASE_URL").1 {
            v if v.trim().is_empty() => database_url.clone(),
            v => v,
        };
        let pushgateway_url = Some(get("HERALD_PUSHGATEWAY_URL").1)
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim_end_matches('/').to_string());
        let instance_id = match get("HERALD_INSTANCE_ID").1 {
            v if v.trim().is_empty() => default_instance_id(),
            v => v,
        };
        let otlp_endpoint = Some(get("OTEL_EXPORTER_OTLP_ENDPOINT").1)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        Ok(Self {
            database_url,
            read_database_url,
            db_max_connections: parse_num(get("HERALD_DB_MAX_CONNECTIONS"), 1, 10_000)?,
            db_acquire_timeout: millis(get("HERALD_DB_ACQUIRE_TIMEOUT_MS"))?,
            redis_url: non_empty(get("HERALD_REDIS_URL"))?,
            redis_prefix: redis_prefix(get("HERALD_REDIS_PREFIX"))?,
            pushgateway_url,
            instance_id,
            push_interval: millis(get("HERALD_PUSH_INTERVAL_MS"))?,
            otlp_endpoint,
            command_addr: addr(get("HERALD_COMMAND_ADDR"))?,
            query_addr: addr(get("HERALD_QUERY_ADDR"))?,
            projector_addr: addr(get("HERALD_PROJECTOR_ADDR"))?,
            max_concurrent_batches: parse_num(
                get("HERALD_COMMAND_MAX_CONCURRENT_BATCHES"),
                1,
                1_000,
            )?,
            max_concurrent_stats: parse_num(get("HERALD_QUERY_MAX_CONCURRENT_STATS"), 1, 1_000)?,
            migration_lock_wait: millis(get("HERALD_MIGRATION_LOCK_WAIT_MS"))?,
            max_in_flight: parse_num(get("HERALD_MAX_IN_FLIGHT"), 1, 100_000)?,
            request_timeout: millis(get("HERALD_REQUEST_TIMEOUT_MS"))?,
            health_timeout: millis(get("HERALD_HEALTH_TIMEOUT_MS"))?,
            log_format: log_format(get("HERALD_LOG_FORMAT"))?,
            stream_shards: parse_num(get("HERALD_STREAM_SHARDS"), 1, 1024)?,
            quota: quota_limits(&get)?,
            quota_replicas: parse_num(get("HERALD_QUOTA_REPLICAS"), 1, 10_000)?,
            quota_metrics_per_tenant: flag(get("HERALD_QUOTA_METRICS_PER_TENANT"))?,
        })
    }
}

/// The documented default of `name` ("" for an unknown name).
pub fn default_of(name: &str) -> &'static str {
    VARIABLES
        .iter()
        .find(|v| v.name == name)
        .map_or("", |v| v.default)
}

/// Reads a service-specific numeric variable with a default and bounds, for the settings of
/// one service (the variable must also be listed in that service's documentation).
pub fn parse_var<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match lookup(name) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => parse_num((name, v), min, max),
    }
}

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn non_empty((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(name, &value, "must not be empty"));
    }
    Ok(value)
}

fn parse_num<T>((name, value): (&'static str, String), min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n: T = value
        .trim()
        .parse()
        .map_err(|_| invalid(name, &value, "not a number"))?;
    if n < min || n > max {
        return Err(invalid(
            name,
            &value,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

fn quota_limits(
    get: &impl Fn(&'static str) -> (&'static str, String),
) -> Result<crate::quota::Limits, ConfigError> {
    let n = |name: &'static str| parse_num(get(name), 1u32, crate::quota::MAX_LIMIT);
    Ok(crate::quota::Limits {
        requests_per_second: n("HERALD_QUOTA_REQUESTS_PER_SECOND")?,
        request_burst: n("HERALD_QUOTA_REQUEST_BURST")?,
        concurrent_requests: n("HERALD_QUOTA_CONCURRENT_REQUESTS")?,
        batch_events_per_second: n("HERALD_QUOTA_BATCH_EVENTS_PER_SECOND")?,
        batch_event_burst: n("HERALD_QUOTA_BATCH_EVENT_BURST")?,
        concurrent_batches: n("HERALD_QUOTA_CONCURRENT_BATCHES")?,
        concurrent_queries: n("HERALD_QUOTA_CONCURRENT_QUERIES")?,
        query_cost_per_second: n("HERALD_QUOTA_QUERY_COST_PER_SECOND")?,
        query_cost_burst: n("HERALD_QUOTA_QUERY_COST_BURST")?,
    })
}

fn flag((name, value): (&'static str, String)) -> Result<bool, ConfigError> {
    match value.trim() {
        "1" => Ok(true),
        "0" | "" => Ok(false),
        _ => Err(invalid(name, &value, "expected 0 or 1")),
    }
}

fn millis(var: (&'static str, String)) -> Result<Duration, ConfigError> {
    parse_num(var, 1u64, 3_600_000).map(Duration::from_millis)
}

fn addr((name, value): (&'static str, String)) -> Result<SocketAddr, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(name, &value, "expected host:port, e.g. 127.0.0.1:8080"))
}

fn redis_prefix((name, value): (&'static str, String)) -> Result<String, ConfigError> {
    // Braces would change Redis Cluster hash slots and whitespace breaks key parsing in tools.
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c == '{' || c == '}')
    {
        return Err(invalid(
            name,
            &value,
            "must be non-empty, without spaces or braces",
        ));
    }
    Ok(value)
}

fn log_format((name, value): (&'static str, String)) -> Result<LogFormat, ConfigError> {
    match value.trim() {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        "auto" => Ok(LogFormat::Auto),
        _ => Err(invalid(name, &value, "expected json, pretty or auto")),
    }
}

fn default_instance_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_string())
}

/// The configuration table of `docs/configuration.md`, rendered from [`VARIABLES`].
pub fn markdown_table() -> String {
    let mut out = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for v in VARIABLES {
        let default = if v.default.is_empty() {
            "(empty)".to_string()
        } else {
            format!("`{}`", v.default)
        };
        out.push_str(&format!("| `{}` | {} | {} |\n", v.name, default, v.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_local_setup_script() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.database_url, "postgres://postgres@127.0.0.1:55432/herald");
        assert_eq!(s.read_database_url, s.database_url);
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.pushgateway_url.as_deref(), Some("http://127.0.0.1:59091"));
        assert_eq!(s.command_addr.port(), 8080);
        assert_eq!(s.query_addr.port(), 8081);
        assert_eq!(s.projector_addr.port(), 8082);
        assert!(!s.instance_id.is_empty());
        assert_eq!(s.push_interval, Duration::from_secs(15));
        assert_eq!(s.otlp_endpoint, None);
    }

    #[test]
    fn empty_pushgateway_disables_pushing_and_read_url_can_differ() {
        let s = settings(&[
            ("HERALD_PUSHGATEWAY_URL", ""),
            ("HERALD_READ_DATABASE_URL", "postgres://reader@db/herald"),
        ])
        .unwrap();
        assert_eq!(s.pushgateway_url, None);
        assert_eq!(s.read_database_url, "postgres://reader@db/herald");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = settings(&[("HERALD_DB_MAX_CONNECTIONS", "lots")]).unwrap_err();
        assert_eq!(e.name, "HERALD_DB_MAX_CONNECTIONS");
        let e = settings(&[("HERALD_DB_MAX_CONNECTIONS", "0")]).unwrap_err();
        assert!(e.reason.contains("between"), "{e}");
        let e = settings(&[("HERALD_QUERY_ADDR", "nowhere")]).unwrap_err();
        assert_eq!(e.name, "HERALD_QUERY_ADDR");
        let e = settings(&[("HERALD_REDIS_PREFIX", "a{b}")]).unwrap_err();
        assert_eq!(e.name, "HERALD_REDIS_PREFIX");
        let e = settings(&[("HERALD_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(e.name, "HERALD_LOG_FORMAT");
    }

    #[test]
    fn every_variable_has_help_and_a_unique_name() {
        let mut names: Vec<_> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), VARIABLES.len());
        assert!(VARIABLES.iter().all(|v| !v.help.is_empty()));
    }
}
