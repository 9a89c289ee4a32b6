//! Read-side figures: projection throughput beside the INSERT ceiling, the rebuild rate,
//! commit-to-visible freshness at a fixed command rate, and stats query latency beside the
//! naive `time_bucket` query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::env::{command_service, free_port, BenchEnv, PeakRss};
use crate::load::{self, Progress};
use crate::Recorder;

/// A `message_events` row, for the INSERT ceiling.
#[derive(sqlx::FromRow)]
#[allow(dead_code)]
struct EventRow {
    version: i32,
    tenant_id: uuid::Uuid,
    message_id: uuid::Uuid,
    sequence: i64,
    global_position: i64,
    tx_id: i64,
    event_type: String,
    event_version: String,
    status: String,
    previous_status: Option<String>,
    status_changed: bool,
    channel: String,
    provider: String,
    tags: Vec<String>,
    occurred_at: chrono::DateTime<chrono::Utc>,
    received_at: chrono::DateTime<chrono::Utc>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    projected_at: chrono::DateTime<chrono::Utc>,
    latency_ms_from_submit: Option<i64>,
    latency_ms_from_dispatch: Option<i64>,
    dedupe_key: Option<String>,
    engagement: Option<String>,
    engagement_first: Option<bool>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    traceparent: Option<String>,
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

/// Waits until `message_events` of the active version holds `n` rows.
pub async fn wait_projected(pool: &sqlx::PgPool, n: i64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let have = count(pool, "SELECT count(*) FROM message_events WHERE version = (SELECT version FROM read_model_active)").await?;
        if have >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("projected {have} of {n} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Projection: `events` generated into the store, then a projector process started; the
/// rate until all are in the read models. Ceiling: the same rows as multi-row INSERTs into
/// `message_events` alone. Returns (projected events/s, ceiling events/s, peak RSS MiB).
pub async fn projection(env: &BenchEnv, events: usize) -> anyhow::Result<(f64, f64, f64)> {
    let pool = env.pool(4).await?;
    let spec = crate::generate::Spec {
        events,
        tenant: uuid::Uuid::new_v4(),
        end: chrono::Utc::now(),
        days: 2,
        writers: 2,
    };
    let n = crate::generate::generate(&env.db_url, &spec).await? as i64;
    let port = free_port();
    let started = Instant::now();
    let svc = env
        .spawn(
            "projector",
            &[("HERALD_PROJECTOR_ADDR", format!("127.0.0.1:{port}"))],
            &format!("http://127.0.0.1:{port}/health/live"),
        )
        .await?;
    let rss = PeakRss::start(svc.pid());
    wait_projected(&pool, n, Duration::from_secs(3_600)).await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let peak = rss.finish();
    svc.stop();

    // The same rows again, as another version: multi-row INSERTs of 500 (the projector's
    // batch size), each its own transaction, values bound as the projector binds them.
    let rows: Vec<EventRow> =
        sqlx::query_as("SELECT * FROM message_events WHERE version = 1 ORDER BY global_position")
            .fetch_all(&pool)
            .await?;
    let started = Instant::now();
    for chunk in rows.chunks(500) {
        let mut q: sqlx::QueryBuilder<sqlx::Postgres> = sqlx::QueryBuilder::new(
            "INSERT INTO message_events (version, tenant_id, message_id, sequence, global_position, tx_id, event_type, \
             event_version, status, previous_status, status_changed, channel, provider, tags, occurred_at, received_at, \
             recorded_at, latency_ms_from_submit, latency_ms_from_dispatch, dedupe_key, engagement, engagement_first, \
             correlation_id, causation_id, traceparent) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(99i32)
                .push_bind(r.tenant_id)
                .push_bind(r.message_id)
                .push_bind(r.sequence)
                .push_bind(r.global_position)
                .push_bind(r.tx_id)
                .push_bind(&r.event_type)
                .push_bind(&r.event_version)
                .push_bind(&r.status)
                .push_bind(&r.previous_status)
                .push_bind(r.status_changed)
                .push_bind(&r.channel)
                .push_bind(&r.provider)
                .push_bind(&r.tags)
                .push_bind(r.occurred_at)
                .push_bind(r.received_at)
                .push_bind(r.recorded_at)
                .push_bind(r.latency_ms_from_submit)
                .push_bind(r.latency_ms_from_dispatch)
                .push_bind(&r.dedupe_key)
                .push_bind(&r.engagement)
                .push_bind(r.engagement_first)
                .push_bind(&r.correlation_id)
                .push_bind(&r.causation_id)
                .push_bind(&r.traceparent);
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&pool).await?;
    }
    let ceiling = rows.len() as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DELETE FROM message_events WHERE version = 99")
        .execute(&pool)
        .await?;
    Ok((rate, ceiling, peak))
}

/// `projector rebuild` on the events in `env`'s store: events/s.
pub async fn rebuild(env: &BenchEnv) -> anyhow::Result<f64> {
    let pool = env.pool(2).await?;
    let n = count(&pool, "SELECT count(*) FROM events").await?;
    let started = Instant::now();
    let status = std::process::Command::new(env.bin_dir.join("projector"))
        .arg("rebuild")
        .env("HERALD_DATABASE_URL", &env.db_url)
        .env("HERALD_REDIS_URL", &env.redis_url)
        .env("HERALD_REDIS_PREFIX", &env.prefix)
        .env("HERALD_PUSHGATEWAY_URL", "")
        .env("RUST_LOG", "warn")
        .status()?;
    anyhow::ensure!(status.success(), "projector rebuild failed");
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// `VACUUM ANALYZE` of the whole database: the steady state of a store after a bulk load.
pub async fn vacuum(env: &BenchEnv) -> anyhow::Result<()> {
    let pool = env.pool(1).await?;
    sqlx::query("VACUUM (ANALYZE)").execute(&pool).await?;
    Ok(())
}

/// Freshness: the command service, projector and query service running; submits at a
/// fixed `rate` for `duration`; for every event, commit (recorded_at) to read-model commit
/// (projected_at). Returns (p50 ms, p99 ms, peak RSS MiB of command, projector, query).
pub async fn freshness(
    env: &BenchEnv,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<(f64, f64, [f64; 3])> {
    let (command, cp, key) = command_service(env, &[]).await?;
    let (pp, qp) = (free_port(), free_port());
    let projector = env
        .spawn(
            "projector",
            &[
                ("HERALD_PROJECTOR_ADDR", format!("127.0.0.1:{pp}")),
                ("HERALD_RELAY_POLL_MS", "100".into()),
                ("HERALD_PROJECTOR_BLOCK_MS", "100".into()),
            ],
            &format!("http://127.0.0.1:{pp}/health/live"),
        )
        .await?;
    let query = env
        .spawn(
            "query-service",
            &[("HERALD_QUERY_ADDR", format!("127.0.0.1:{qp}"))],
            &format!("http://127.0.0.1:{qp}/health/ready"),
        )
        .await?;
    let pool = env.pool(4).await?;
    let samplers = [command.pid(), projector.pid(), query.pid()].map(PeakRss::start);
    let before = count(
        &pool,
        "SELECT coalesce(max(global_position), 0) FROM events",
    )
    .await?;
    let config = crate::ingest::submit_load(
        format!("http://127.0.0.1:{cp}"),
        vec![key.clone()],
        32,
        duration,
        rate,
    );
    let report = load::run(config, Arc::new(Progress::default())).await;
    let total = count(&pool, "SELECT count(*) FROM events").await?;
    wait_projected(&pool, total, Duration::from_secs(120)).await?;
    // Also a read through the query service, with the consistency token of a fresh write.
    let _ = query_probe(qp, &key, cp).await;
    let peaks = samplers.map(PeakRss::finish);
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d) FROM (
           SELECT extract(epoch FROM m.projected_at - e.recorded_at) * 1000 AS d
             FROM message_events m JOIN events e ON e.global_position = m.global_position
            WHERE m.version = 1 AND e.global_position > $1) x",
    )
    .bind(before)
    .fetch_one(&pool)
    .await?;
    eprintln!(
        "freshness: {} submits at {rate}/s ({} ok)",
        report.submits.count(),
        report.submits.ok()
    );
    command.stop();
    projector.stop();
    query.stop();
    Ok((p50, p99, peaks))
}

async fn query_probe(qp: u16, key: &str, cp: u16) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let body = serde_json::json!({"channel": "sms", "recipient": "+14155550123", "provider": "twilio", "content": {"type": "inline", "body": "probe"}});
    let answer: serde_json::Value = client
        .post(format!("http://127.0.0.1:{cp}/v1/messages"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let token = answer["consistency_token"].as_str().unwrap_or_default();
    let r: serde_json::Value = client
        .get(format!(
            "http://127.0.0.1:{qp}/v1/stats/messages?consistency_token={token}&wait_ms=5000"
        ))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        r["freshness"]["consistent"] == true,
        "probe not visible: {r}"
    );
    Ok(())
}

/// The query shapes of the `queries` scenario: name, query parameters (given the range
/// end), the naive SQL over `message_events` (`$1` tenant, `$2` from, `$3` to) and the
/// range in days.
pub fn query_shapes() -> Vec<(&'static str, &'static str, &'static str, i64)> {
    vec![
        (
            "hour buckets by channel, 30 days",
            "bucket=hour&group_by=channel&metrics=counts",
            "SELECT time_bucket('1 hour', occurred_at) AS b, channel, status, count(*)
               FROM message_events
              WHERE version = (SELECT version FROM read_model_active) AND tenant_id = $1
                AND occurred_at >= $2 AND occurred_at < $3 AND status_changed
              GROUP BY 1, 2, 3",
            30,
        ),
        (
            "day buckets in Europe/Berlin with p95 latency, 30 days",
            "bucket=day&tz=Europe/Berlin&metrics=counts,rates,latency",
            "SELECT time_bucket('1 day', occurred_at, 'Europe/Berlin') AS b, count(*) FILTER (WHERE status = 'delivered' AND status_changed),
                    percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms_from_submit)
               FROM message_events
              WHERE version = (SELECT version FROM read_model_active) AND tenant_id = $1
                AND occurred_at >= $2 AND occurred_at < $3
              GROUP BY 1",
            30,
        ),
        (
            "15-minute buckets in Asia/Kolkata with latency, 7 days",
            "bucket=15m&tz=Asia/Kolkata&metrics=counts,latency",
            "SELECT time_bucket('15 minutes', occurred_at, 'Asia/Kolkata') AS b, status, count(*) FILTER (WHERE status_changed),
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms_from_submit),
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms_from_dispatch)
               FROM message_events
              WHERE version = (SELECT version FROM read_model_active) AND tenant_id = $1
                AND occurred_at >= $2 AND occurred_at < $3
              GROUP BY 1, 2",
            7,
        ),
        (
            "Berlin days by channel and tag, every metric, 30 days",
            "bucket=day&tz=Europe/Berlin&group_by=channel,tag&metrics=counts,rates,latency",
            "SELECT time_bucket('1 day', occurred_at, 'Europe/Berlin') AS b, channel, t.tag, status,
                    count(*) FILTER (WHERE status_changed),
                    count(*) FILTER (WHERE engagement IS NOT NULL),
                    count(*) FILTER (WHERE engagement_first),
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms_from_submit),
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms_from_dispatch)
               FROM message_events, unnest(tags) AS t(tag)
              WHERE version = (SELECT version FROM read_model_active) AND tenant_id = $1
                AND occurred_at >= $2 AND occurred_at < $3
              GROUP BY 1, 2, 3, 4",
            30,
        ),
        (
            "400 days in Berlin months, every metric",
            "bucket=month&tz=Europe/Berlin&metrics=counts,rates,latency",
            "SELECT time_bucket('1 month', occurred_at, 'Europe/Berlin') AS b, status,
                    count(*) FILTER (WHERE status_changed),
                    count(*) FILTER (WHERE engagement_first),
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms_from_submit),
                    percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms_from_dispatch)
               FROM message_events
              WHERE version = (SELECT version FROM read_model_active) AND tenant_id = $1
                AND occurred_at >= $2 AND occurred_at < $3
              GROUP BY 1, 2",
            400,
        ),
    ]
}

/// One shape's measurements.
pub struct ShapeResult {
    /// The shape's name.
    pub name: String,
    /// Herald's endpoint.
    pub herald: Recorder,
    /// The naive query.
    pub naive: Recorder,
    /// The rollup level that answered.
    pub level: String,
}

/// Stats query latency on `env`'s data (one tenant, events over the 30 days before `end`):
/// every shape of [`query_shapes`] through Herald's endpoint and as the naive query over
/// `message_events`, `runs` each, alternating. Returns the results and the query service's
/// peak resident memory (MiB).
pub async fn queries(
    env: &BenchEnv,
    tenant: uuid::Uuid,
    end: chrono::DateTime<chrono::Utc>,
    runs: usize,
) -> anyhow::Result<(Vec<ShapeResult>, f64)> {
    let qp = free_port();
    let query = env
        .spawn(
            "query-service",
            &[("HERALD_QUERY_ADDR", format!("127.0.0.1:{qp}"))],
            &format!("http://127.0.0.1:{qp}/health/ready"),
        )
        .await?;
    let pool = env.pool(4).await?;
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'bench') ON CONFLICT DO NOTHING")
        .bind(tenant)
        .execute(&pool)
        .await?;
    let key = service_kit::auth::ApiKeys::new(pool.clone())
        .add_key(tenant)
        .await?;
    let end = crate::ceil_15m(end);
    let enc = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let client = reqwest::Client::new();
    let rss = PeakRss::start(query.pid());
    let mut out = Vec::new();
    for (name, params, naive_sql, days) in query_shapes() {
        let from = end - chrono::Duration::days(days);
        let mut herald = Recorder::default();
        let mut naive = Recorder::default();
        let url = format!(
            "http://127.0.0.1:{qp}/v1/stats/messages?from={}&to={}&{params}",
            enc(from),
            enc(end)
        );
        // One warm-up each, so both start with warm caches.
        let warm: serde_json::Value = client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(warm["source"] == "rollup", "{name}: {warm}");
        let level = warm["level"].as_str().unwrap_or("?").to_string();
        sqlx::query(naive_sql)
            .bind(tenant)
            .bind(from)
            .bind(end)
            .fetch_all(&pool)
            .await?;
        for _ in 0..runs {
            let t = Instant::now();
            let r = client.get(&url).bearer_auth(&key).send().await?;
            let status = r.status().as_u16();
            let _ = r.bytes().await?;
            herald.record(status, t.elapsed());
            let t = Instant::now();
            sqlx::query(naive_sql)
                .bind(tenant)
                .bind(from)
                .bind(end)
                .fetch_all(&pool)
                .await?;
            naive.record(200, t.elapsed());
        }
        out.push(ShapeResult {
            name: name.to_string(),
            herald,
            naive,
            level,
        });
    }
    let peak = rss.finish();
    query.stop();
    Ok((out, peak))
}
