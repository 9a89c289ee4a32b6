//! The benchmark's surroundings: a database of its own, Redis keys of its own, and the
//! services as real child processes (release builds), whose memory is sampled from /proc.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Connection;

/// Where the benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchEnv {
    /// Admin connection (the `postgres` database of the cluster).
    pub admin_url: String,
    /// The benchmark database.
    pub db_url: String,
    /// Its name.
    pub db_name: String,
    /// Redis URL.
    pub redis_url: String,
    /// Redis key prefix of this run.
    pub prefix: String,
    /// Directory of the release binaries.
    pub bin_dir: PathBuf,
}

impl BenchEnv {
    /// A fresh, migrated database `herald_bench_<tag>` (dropped first if it exists).
    pub async fn fresh(tag: &str) -> anyhow::Result<Self> {
        let admin_url = std::env::var("HERALD_BENCH_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".into());
        let db_name = format!("herald_bench_{tag}");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .context("connect to the cluster")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await?;
        let db_url = format!(
            "{}/{db_name}",
            admin_url.rsplit_once('/').expect("URL has a database").0
        );
        migrations::run(&db_url, Duration::from_secs(60)).await?;
        let bin_dir = std::env::current_exe()?
            .parent()
            .expect("binary directory")
            .to_path_buf();
        Ok(Self {
            admin_url,
            db_url,
            db_name,
            redis_url: std::env::var("HERALD_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            prefix: format!("herald-bench:{}", uuid::Uuid::new_v4().simple()),
            bin_dir,
        })
    }

    /// A pool on the benchmark database.
    pub async fn pool(&self, max: u32) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(max)
            .connect(&self.db_url)
            .await?)
    }

    /// Starts `binary` with Herald's environment plus `extra`, and waits until `ready`
    /// (a URL answering 2xx) responds.
    pub async fn spawn(
        &self,
        binary: &str,
        extra: &[(&str, String)],
        ready: &str,
    ) -> anyhow::Result<Service> {
        let mut cmd = Command::new(self.bin_dir.join(binary));
        cmd.env("HERALD_DATABASE_URL", &self.db_url)
            .env("HERALD_REDIS_URL", &self.redis_url)
            .env("HERALD_REDIS_PREFIX", &self.prefix)
            .env("HERALD_PUSHGATEWAY_URL", "")
            .env("HERALD_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // The benchmarks measure the services, not the quotas (the fair-share scenario sets
        // its own in `extra`).
        for (k, v) in service_kit::quota::UNLIMITED {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("start {binary} (run `cargo build --release -p bench -p command-service -p query-service -p projector`)"))?;
        let service = Service {
            name: binary.to_string(),
            child,
            peak_rss_kb: 0,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client
                .get(ready)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(service);
                }
            }
            if Instant::now() > deadline {
                bail!("{binary} not ready at {ready}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drops the database and the run's Redis keys.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// A running service process.
pub struct Service {
    /// Binary name.
    pub name: String,
    child: Child,
    /// Largest resident set seen by [`Service::sample_rss`], KiB.
    pub peak_rss_kb: u64,
}

impl Service {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the current resident set size and keeps the peak.
    pub fn sample_rss(&mut self) -> u64 {
        let kb = rss_kb(self.pid()).unwrap_or(0);
        self.peak_rss_kb = self.peak_rss_kb.max(kb);
        kb
    }

    /// SIGTERM, then wait (SIGKILL after 10 s).
    pub fn stop(mut self) -> u64 {
        self.sample_rss();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.peak_rss_kb;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.peak_rss_kb
    }
}

/// VmRSS of a process, KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The peak resident set of a process while it is under load, sampled every 100 ms on a
/// thread of its own (so the async runtime driving the load is not involved).
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Self { stop, thread }
    }

    /// Stops sampling; the peak in MiB.
    pub fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0) as f64 / 1024.0
    }
}

/// Starts a command service on a free port with `extra` settings and creates a tenant:
/// the service, its port, and the tenant's API key.
pub async fn command_service(
    env: &BenchEnv,
    extra: &[(&str, String)],
) -> anyhow::Result<(Service, u16, String)> {
    let port = free_port();
    let mut vars = vec![("HERALD_COMMAND_ADDR", format!("127.0.0.1:{port}"))];
    vars.extend(extra.iter().cloned());
    let svc = env
        .spawn(
            "command-service",
            &vars,
            &format!("http://127.0.0.1:{port}/health/ready"),
        )
        .await?;
    let (_, key) = service_kit::auth::ApiKeys::new(env.pool(2).await?)
        .create_tenant(&format!("bench-{}", uuid::Uuid::new_v4()))
        .await?;
    Ok((svc, port, key))
}
