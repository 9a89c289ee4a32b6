//! Test support, shared by every crate's tests as a dependency: every test gets its own
//! database in Herald's TimescaleDB cluster and its own Redis key prefix, so the whole
//! suite runs in parallel without tests seeing each other.
//!
//! The cluster is the one `timescale/setup.sh` starts; `HERALD_TEST_ADMIN_URL` points
//! elsewhere (any database on a server with TimescaleDB installed and preloaded).
//! Databases are named `herald_test_<uuid>`; the test script drops leftovers before a run.

pub mod events;
pub mod openapi;
pub mod pipeline;
pub mod prom_text;
pub mod pushgateway;
pub mod traces;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::{Connection, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use service_kit::Settings;

/// Default admin connection: the `postgres` database of Herald's local cluster.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:55432/postgres";

/// The admin URL tests create databases through.
pub fn admin_url() -> String {
    std::env::var("HERALD_TEST_ADMIN_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// A database of one test's own.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its name, `herald_test_<uuid>`.
    pub name: String,
    /// A connection string to it.
    pub url: String,
}

impl TestDb {
    /// A new, empty database (no extension, no schema).
    pub async fn empty() -> Self {
        let admin = admin_url();
        let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("test cluster at {admin} unreachable ({e}); run timescale/setup.sh")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let url = replace_database(&admin, &name);
        Self { name, url }
    }

    /// A new database with every migration applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        migrations::run(&db.url, std::time::Duration::from_secs(60))
            .await
            .expect("migrate test database");
        db
    }

    /// A pool on this database.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// The connection string of this database reached through `proxy` instead of directly.
    pub fn url_via(&self, proxy: SocketAddr) -> String {
        let mut url = url_parts(&self.url);
        url.host_port = proxy.to_string();
        url.render()
    }
}

/// A Redis key prefix of one test's own.
pub fn redis_prefix() -> String {
    format!("herald-test:{}", uuid::Uuid::new_v4().simple())
}

/// Redis URL for tests (`HERALD_TEST_REDIS_URL`, default the local Redis).
pub fn redis_url() -> String {
    std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Settings for an app under test: the given database, a fresh Redis prefix, random
/// ports, no Pushgateway, and short bounds so failures show quickly.
pub fn settings(database_url: &str) -> Settings {
    let mut vars: HashMap<&str, String> = HashMap::new();
    vars.insert("HERALD_DATABASE_URL", database_url.to_string());
    vars.insert("HERALD_REDIS_URL", redis_url());
    vars.insert("HERALD_REDIS_PREFIX", redis_prefix());
    vars.insert("HERALD_PUSHGATEWAY_URL", String::new());
    vars.insert(
        "HERALD_INSTANCE_ID",
        format!("test-{}", uuid::Uuid::new_v4().simple()),
    );
    for key in [
        "HERALD_COMMAND_ADDR",
        "HERALD_QUERY_ADDR",
        "HERALD_PROJECTOR_ADDR",
    ] {
        vars.insert(key, "127.0.0.1:0".to_string());
    }
    // Tests of anything but the quotas are not throttled; those of the quotas set theirs.
    for (k, v) in service_kit::quota::UNLIMITED {
        vars.insert(k, v.to_string());
    }
    vars.insert("HERALD_DB_ACQUIRE_TIMEOUT_MS", "2000".to_string());
    vars.insert("HERALD_HEALTH_TIMEOUT_MS", "1000".to_string());
    Settings::from_lookup(|k| vars.get(k).cloned()).expect("test settings are valid")
}

struct UrlParts {
    scheme_user: String,
    host_port: String,
    rest: String,
}

impl UrlParts {
    fn render(&self) -> String {
        format!("{}{}{}", self.scheme_user, self.host_port, self.rest)
    }
}

fn url_parts(url: &str) -> UrlParts {
    // postgres://user[:pw]@host:port/db?params
    let (scheme, after) = url.split_once("://").expect("URL has a scheme");
    let (user, hostpart) = match after.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), after),
    };
    let split = hostpart.find(['/', '?']).unwrap_or(hostpart.len());
    UrlParts {
        scheme_user: format!("{scheme}://{user}"),
        host_port: hostpart[..split].to_string(),
        rest: hostpart[split..].to_string(),
    }
}

fn replace_database(url: &str, db: &str) -> String {
    let mut parts = url_parts(url);
    let query = parts
        .rest
        .find('?')
        .map(|i| parts.rest[i..].to_string())
        .unwrap_or_default();
    parts.rest = format!("/{db}{query}");
    parts.render()
}

/// A TCP proxy a test can cut, to make a dependency "go down" for one app without touching
/// the shared server every other test is using.
pub struct TcpProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    _task: Arc<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding a random local port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (up, up_rx) = watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !*up_rx.borrow() {
                    drop(client);
                    continue;
                }
                let mut down = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            _task: Arc::new(task),
        }
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        let _ = self.up.send(false);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        let _ = self.up.send(true);
    }
}

/// The socket address of a `postgres://` URL's host and port.
pub fn url_socket_addr(url: &str) -> SocketAddr {
    let parts = url_parts(url);
    let host_port = if parts.host_port.contains(':') {
        parts.host_port.clone()
    } else {
        format!("{}:5432", parts.host_port)
    };
    host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("host:port is a socket address")
}

/// An app running in-process on a random port, stopped on [`RunningApp::stop`].
pub struct RunningApp {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningApp {
    /// Runs `app` in the background.
    pub fn spawn(app: service_kit::App) -> Self {
        let base_url = format!("http://{}", app.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        Self {
            base_url,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `base_url` joined with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Shuts the app down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("app served");
        }
    }
}

/// Checks the readiness contract of a service built by `build`: started on a fresh, empty
/// database it migrates it and answers `/health/ready` 200; with the database unreachable
/// it answers 503 naming the `database` check (promptly, not a hang); when the database
/// returns it answers 200 again. Each service's tests call this with its own `build`.
pub async fn assert_readiness_follows_database<B, F>(build: B)
where
    B: FnOnce(Settings) -> F,
    F: std::future::Future<Output = Result<service_kit::App, service_kit::StartupError>>,
{
    use service_kit::health::ReadinessReport;

    let db = TestDb::empty().await;
    let proxy = TcpProxy::start(url_socket_addr(&db.url)).await;
    let settings = settings(&db.url_via(proxy.addr()));
    let app = RunningApp::spawn(build(settings).await.expect("service starts"));
    let client = reqwest::Client::new();
    let ready = || async {
        let started = std::time::Instant::now();
        let response = client
            .get(app.url("/health/ready"))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .expect("readiness answers");
        let status = response.status().as_u16();
        let report: ReadinessReport = response.json().await.expect("readiness body is JSON");
        (status, report, started.elapsed())
    };

    let live = client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);

    let (status, report, _) = ready().await;
    assert_eq!(status, 200, "{report:?}");
    assert_eq!(
        report.checks.get("database").map(String::as_str),
        Some("ok")
    );
    assert_eq!(
        report.checks.get("migrations").map(String::as_str),
        Some("ok")
    );

    // Migrations ran against the fresh database before the app served.
    let direct = db.pool().await;
    let applied: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}",
        migrations::HISTORY_TABLE
    ))
    .fetch_one(&direct)
    .await
    .expect("schema history exists");
    assert_eq!(applied as usize, migrations::embedded_versions().len());

    proxy.cut();
    let (status, report, took) = ready().await;
    assert_eq!(status, 503, "{report:?}");
    assert_eq!(report.status, "not_ready");
    assert!(
        report.failed.contains(&"database".to_string()),
        "{report:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(5),
        "readiness took {took:?}"
    );

    proxy.restore();
    let mut last = None;
    for _ in 0..50 {
        let (status, report, _) = ready().await;
        if status == 200 {
            last = None;
            break;
        }
        last = Some(report);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        last.is_none(),
        "not ready again after the database returned: {last:?}"
    );

    // Live stays 200 throughout: liveness must not depend on the database.
    let live = client.get(app.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status().as_u16(), 200);
    app.stop().await;
}

/// A test's own database, Redis prefix and settings, and a writer into its event store:
/// what every pipeline test starts from.
pub struct Harness {
    /// The database (migrated).
    pub db: TestDb,
    /// A pool on it.
    pub pool: sqlx::PgPool,
    /// Settings of apps under test (this database, this Redis prefix).
    pub settings: Settings,
    /// A Redis connection.
    pub redis: redis::aio::MultiplexedConnection,
    /// Appends commands the way the command service does.
    pub writer: events::Writer,
}

impl Harness {
    /// A fresh, migrated database and Redis prefix.
    pub async fn new() -> Self {
        Self::on(TestDb::migrated().await).await
    }

    /// A harness on `db` as it is (an upgrade test's older schema, say), with a fresh
    /// Redis prefix.
    pub async fn on(db: TestDb) -> Self {
        let pool = db.pool().await;
        let settings = settings(&db.url);
        let client = redis::Client::open(settings.redis_url.as_str()).expect("redis URL");
        let redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects");
        let writer = events::Writer::new(pool.clone());
        Self {
            db,
            pool,
            settings,
            redis,
            writer,
        }
    }

    /// Settings of one replica: the harness's database and prefix, its own instance id.
    pub fn replica_settings(&self, instance: &str) -> Settings {
        let mut s = self.settings.clone();
        s.instance_id = instance.to_string();
        s
    }

    /// Decides `cmd` on the message's state and appends its events (see
    /// [`events::Writer::append`]).
    pub async fn append(&self, message: uuid::Uuid, cmd: domain::MessageCommand) -> usize {
        self.writer.append(message, cmd).await
    }

    /// Runs `plan` with `writers` concurrent writers (see [`events::Writer::write`]).
    pub async fn write(&self, plan: events::Plan, writers: usize) -> usize {
        self.writer.write(plan, writers).await
    }

    /// Message events in the event store.
    pub async fn message_event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Message'")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Rows of `message_events` of read-model `version`.
    pub async fn projected_count(&self, version: i32) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM message_events WHERE version = $1")
            .bind(version)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Waits (bounded) until every Message event is in `message_events` of `version`.
    pub async fn wait_projected(&self, version: i32, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let want = self.message_event_count().await;
            let have = self.projected_count(version).await;
            if have == want {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("version {version}: {have} of {want} events projected after {within:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Deletes every Redis key of this test (never anyone else's); returns how many.
    pub async fn wipe_redis(&self) -> usize {
        let mut redis = self.redis.clone();
        let pattern = format!("{}:*", self.settings.redis_prefix);
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await
                .expect("scan");
            if !keys.is_empty() {
                let n: usize = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut redis)
                    .await
                    .expect("del");
                deleted += n;
            }
            if next == 0 {
                return deleted;
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_by_parts() {
        assert_eq!(
            replace_database(
                "postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable",
                "x"
            ),
            "postgres://postgres@127.0.0.1:55432/x?sslmode=disable"
        );
        let db = TestDb {
            name: "x".into(),
            url: "postgres://u:p@127.0.0.1:55432/x".into(),
        };
        assert_eq!(
            db.url_via("127.0.0.1:9".parse().unwrap()),
            "postgres://u:p@127.0.0.1:9/x"
        );
        assert_eq!(url_socket_addr(&db.url), "127.0.0.1:55432".parse().unwrap());
    }
}
