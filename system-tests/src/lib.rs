//! Herald as it runs: the service binaries started as processes of their own, on a database
//! and Redis prefix of the test's own, reached over real HTTP.
//!
//! In-process tests share one address space, so they cannot tell what one service's memory
//! does, nor see a panic drop a connection the way a client sees it. These can: each
//! service is a child process whose peak resident memory ([`Service::peak_rss_kib`]) is
//! read from `/proc`, and whose output goes to a log file named after the test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use service_kit::auth::ApiKeys;
use test_support::{self as testing, TestDb};
use uuid::Uuid;

/// Where the binaries under test are, and where their logs go: from the test crate's
/// `CARGO_BIN_EXE_*` and `CARGO_TARGET_TMPDIR` (see [`bins!`]).
#[derive(Debug, Clone, Copy)]
pub struct Bins {
    /// The command service.
    pub command: &'static str,
    /// The query service.
    pub query: &'static str,
    /// The projector (relay and consumers).
    pub projector: &'static str,
    /// A directory for log files.
    pub tmp: &'static str,
}

/// The [`Bins`] of this package, for use in its integration tests.
#[macro_export]
macro_rules! bins {
    () => {
        $crate::Bins {
            command: env!("CARGO_BIN_EXE_herald-system-command-service"),
            query: env!("CARGO_BIN_EXE_herald-system-query-service"),
            projector: env!("CARGO_BIN_EXE_herald-system-projector"),
            tmp: env!("CARGO_TARGET_TMPDIR"),
        }
    };
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One service process.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Service {
    /// Starts `binary` with `env` (nothing else of the test's environment is inherited),
    /// listening on a free port through `addr_var`, and waits until `/health/live` answers.
    pub async fn start(
        name: &str,
        binary: &str,
        addr_var: &str,
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Self {
        let port = free_port();
        let log = log_dir.join(format!("{name}-{}.log", Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(addr_var, format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let service = Self {
            name: name.to_string(),
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
        };
        service.wait_live(Duration::from_secs(60)).await;
        service
    }

    /// `base_url` joined with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn wait_live(&self, within: Duration) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client
                .get(self.url("/health/live"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            if started.elapsed() > within {
                panic!(
                    "{} not live after {within:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until `/health/ready` answers 200; the last answer on failure.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let last = match client
                .get(self.url("/health/ready"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > within {
                return Err(format!("{} not ready after {within:?}: {last}", self.name));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A line of `/proc/<pid>/status`, in kB (`VmHWM`, `VmRSS`).
    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Peak resident memory since start, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Everything the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log mentioning a panic.
    pub fn panics(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("panicked") || l.contains("handler panicked"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A whole Herald: a fresh database, its own Redis prefix, and the three services.
pub struct System {
    /// The database (event store and read models).
    pub db: TestDb,
    /// A pool on it, for assertions.
    pub pool: sqlx::PgPool,
    /// The Redis key prefix of this system.
    pub prefix: String,
    /// The command service.
    pub command: Service,
    /// The query service.
    pub query: Service,
    /// The projector.
    pub projector: Service,
    /// An HTTP client.
    pub client: reqwest::Client,
}

impl System {
    /// Starts every service on a fresh database; `extra` adds or overrides environment
    /// variables for all of them.
    pub async fn start(bins: Bins, extra: &[(&str, &str)]) -> Self {
        let db = TestDb::empty().await;
        let prefix = testing::redis_prefix();
        let mut env: Vec<(String, String)> = vec![
            ("HERALD_DATABASE_URL".into(), db.url.clone()),
            ("HERALD_REDIS_URL".into(), testing::redis_url()),
            ("HERALD_REDIS_PREFIX".into(), prefix.clone()),
            ("HERALD_PUSHGATEWAY_URL".into(), String::new()),
            ("HERALD_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "warn".into()),
            ("HERALD_PROJECTOR_BLOCK_MS".into(), "200".into()),
            ("HERALD_RELAY_POLL_MS".into(), "50".into()),
        ];
        // Unthrottled unless a test sets quotas of its own in `extra`.
        env.extend(
            service_kit::quota::UNLIMITED
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let with_id = |id: &str| {
            let mut e = env.clone();
            e.push((
                "HERALD_INSTANCE_ID".into(),
                format!("{id}-{}", Uuid::new_v4().simple()),
            ));
            e
        };
        let tmp = Path::new(bins.tmp);
        // The command service migrates the fresh database first; the others then find it
        // current (they would wait on the migration lock otherwise, which is also fine).
        let command = Service::start(
            "command-service",
            bins.command,
            "HERALD_COMMAND_ADDR",
            &with_id("command"),
            tmp,
        )
        .await;
        let projector = Service::start(
            "projector",
            bins.projector,
            "HERALD_PROJECTOR_ADDR",
            &with_id("projector"),
            tmp,
        )
        .await;
        let query = Service::start(
            "query-service",
            bins.query,
            "HERALD_QUERY_ADDR",
            &with_id("query"),
            tmp,
        )
        .await;
        let pool = db.pool().await;
        Self {
            db,
            pool,
            prefix,
            command,
            query,
            projector,
            client: reqwest::Client::new(),
        }
    }

    /// A new tenant and its key.
    pub async fn tenant(&self, name: &str) -> (Uuid, String) {
        let (tenant, key) = ApiKeys::new(self.pool.clone())
            .create_tenant(&format!("{name}-{}", Uuid::new_v4().simple()))
            .await
            .expect("tenant created");
        (tenant.id, key)
    }

    /// Waits (bounded) until every Message event is in the active read model.
    pub async fn settle(&self, within: Duration) {
        let started = Instant::now();
        loop {
            let (want, have): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM events WHERE aggregate_type = 'Message'), \
                        (SELECT count(*) FROM message_events WHERE version = \
                            (SELECT version FROM read_model_active))",
            )
            .fetch_one(&self.pool)
            .await
            .expect("counts");
            if want == have {
                return;
            }
            if started.elapsed() > within {
                panic!("{have} of {want} events projected after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every service answers `/health/ready` 200 (bounded wait).
    pub async fn assert_ready(&self) {
        for s in [&self.command, &self.query, &self.projector] {
            if let Err(e) = s.wait_ready(Duration::from_secs(30)).await {
                panic!("{e}");
            }
        }
    }

    /// Waits (bounded) until the projector has applied every event, then asserts that the
    /// read models hold exactly what the oracle computes from the event store.
    pub async fn assert_verified(&self) {
        let options = oracle::Options {
            // The services run with the default shard count.
            shards: 4,
            caught_up: true,
            ..oracle::Options::default()
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let report = oracle::verify(&self.pool, &options, |_| {})
                .await
                .expect("verify runs");
            if report.is_clean() {
                assert!(report.messages > 0, "nothing to verify:\n{report}");
                return;
            }
            // Only lag may clear by itself; any other difference fails at the deadline too.
            assert!(
                tokio::time::Instant::now() < deadline,
                "verify found differences:\n{report}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// No service logged a panic.
    pub fn assert_no_panics(&self) {
        for s in [&self.command, &self.query, &self.projector] {
            let panics = s.panics();
            assert!(panics.is_empty(), "{}: {panics:#?}", s.name);
        }
    }
}
