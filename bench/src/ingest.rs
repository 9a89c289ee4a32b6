//! Command ingest: Herald's command service, a client inserting the same event rows
//! straight into Postgres (the ceiling), and the naive cqrs-es service, at one concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::env::{command_service, free_port, BenchEnv, PeakRss};
use crate::load::{self, LoadConfig, Progress};
use crate::workload::{ChannelMix, Rng};
use crate::Recorder;

/// Throughput and latency of one contender.
#[derive(Clone)]
pub struct Throughput {
    /// Accepted per second.
    pub per_second: f64,
    /// The latency of each batch request.
    pub recorder: Recorder,
    /// Peak resident memory of the service, MiB (0 for the in-process ceiling).
    pub peak_rss_mib: f64,
}

/// Submits only (no observations) at `rate` per second (0: as fast as answered).
pub fn submit_load(
    url: String,
    keys: Vec<String>,
    concurrency: usize,
    duration: Duration,
    rate: f64,
) -> LoadConfig {
    LoadConfig {
        url,
        keys,
        rate,
        concurrency,
        duration,
        mix: ChannelMix::default(),
        duplicates: 0,
        reorder: 0,
        time_scale: 1.0,
        submit_only: true,
        seed: 7,
    }
}

/// Herald's command service under `concurrency` clients submitting for `duration`.
pub async fn herald(
    env: &BenchEnv,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let (svc, port, key) =
        command_service(env, &[("HERALD_DB_MAX_CONNECTIONS", "32".into())]).await?;
    Ok(measure(svc, port, key, concurrency, duration).await)
}

/// The naive cqrs-es service under the same load.
pub async fn naive(
    env: &BenchEnv,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let port = free_port();
    let svc = env
        .spawn(
            "herald-naive",
            &[("HERALD_NAIVE_ADDR", format!("127.0.0.1:{port}"))],
            &format!("http://127.0.0.1:{port}/ready"),
        )
        .await?;
    Ok(measure(svc, port, "unused".into(), concurrency, duration).await)
}

/// Submits against the service on `port` and samples its memory meanwhile; stops it.
async fn measure(
    svc: crate::env::Service,
    port: u16,
    key: String,
    concurrency: usize,
    duration: Duration,
) -> Throughput {
    let rss = PeakRss::start(svc.pid());
    let report = load::run(
        submit_load(
            format!("http://127.0.0.1:{port}"),
            vec![key],
            concurrency,
            duration,
            0.0,
        ),
        Arc::new(Progress::default()),
    )
    .await;
    let peak_rss_mib = rss.finish();
    svc.stop();
    Throughput {
        per_second: report.submits.ok() as f64 / report.elapsed.as_secs_f64(),
        recorder: report.submits,
        peak_rss_mib,
    }
}

/// The ceiling: `concurrency` clients inserting the row a submit appends, one transaction
/// each, straight into the event store.
pub async fn direct_insert(
    env: &BenchEnv,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let pool = env.pool(concurrency as u32).await?;
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let pool = pool.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(w as u64 + 11);
            let mut rec = Recorder::default();
            let mix = ChannelMix::default();
            let mut seq = w as u64;
            while start.elapsed() < duration {
                seq += 1;
                let (id, payload) = submitted_event(&mut rng, mix, seq);
                let metadata = json!({
                    "correlation_id": uuid::Uuid::new_v4().to_string(),
                    "causation_id": uuid::Uuid::new_v4().to_string(),
                    "traceparent": format!("00-{}-{:016x}-01", uuid::Uuid::new_v4().simple(), rng.next_u64() | 1),
                    "tenant_id": uuid::Uuid::nil().to_string(),
                    "received_at": chrono::Utc::now().to_rfc3339(),
                });
                let t = Instant::now();
                let mut tx = pool.begin().await.expect("begin");
                sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('Message', $1, 1, 'MessageSubmitted', '1', $2, $3)")
                    .bind(id.to_string())
                    .bind(&payload)
                    .bind(&metadata)
                    .execute(&mut *tx)
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
                rec.record(200, t.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            rec
        }));
    }
    let mut recorder = Recorder::default();
    for t in tasks {
        recorder.merge(&t.await?);
    }
    Ok(Throughput {
        per_second: done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        recorder,
        peak_rss_mib: 0.0,
    })
}

/// A MessageSubmitted event as the command service would store it.
pub fn submitted_event(
    rng: &mut Rng,
    mix: ChannelMix,
    seq: u64,
) -> (uuid::Uuid, serde_json::Value) {
    let plan = crate::workload::message(rng, mix, seq, 0, 0, 1.0);
    let id = uuid::Uuid::new_v4();
    let body = plan.submit;
    let cmd = domain::MessageCommand::Submit(domain::SubmitMessage {
        tenant_id: uuid::Uuid::nil(),
        message_id: id,
        channel: body["channel"].as_str().unwrap().parse().expect("channel"),
        recipient: body["recipient"].as_str().unwrap().to_string(),
        provider: body["provider"].as_str().unwrap().to_string(),
        content: serde_json::from_value(body["content"].clone()).expect("content"),
        tags: serde_json::from_value(body["tags"].clone()).expect("tags"),
        scheduled_at: None,
        ttl_seconds: None,
        submitted_at: chrono::Utc::now(),
        request_fingerprint: format!("{:064x}", seq),
    });
    let events = domain::decide(&domain::Message::default(), cmd).expect("a valid submit");
    (id, serde_json::to_value(&events[0]).expect("serialises"))
}

/// Batch ingest: `clients` clients each posting batches of `size` submits for `duration`.
/// Returns accepted events per second and the batch request latency.
pub async fn batch(
    env: &BenchEnv,
    clients: usize,
    size: usize,
    duration: Duration,
) -> anyhow::Result<Throughput> {
    let (svc, port, key) =
        command_service(env, &[("HERALD_DB_MAX_CONNECTIONS", "32".into())]).await?;
    let rss = PeakRss::start(svc.pid());
    let client = reqwest::Client::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (client, key, accepted) = (client.clone(), key.clone(), accepted.clone());
        let url = format!("http://127.0.0.1:{port}/v1/batch");
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(c as u64 + 3);
            let mix = ChannelMix::default();
            let mut rec = Recorder::default();
            let mut seq = 0;
            while start.elapsed() < duration {
                let commands: Vec<serde_json::Value> = (0..size)
                    .map(|_| {
                        seq += 1;
                        json!({"op": "submit", "message": crate::workload::message(&mut rng, mix, seq, 0, 0, 1.0).submit})
                    })
                    .collect();
                let t = Instant::now();
                let r = client.post(&url).bearer_auth(&key).json(&json!({"commands": commands})).send().await;
                match r {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        accepted.fetch_add(body["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                        rec.record(status, t.elapsed());
                    }
                    Err(_) => rec.record(0, t.elapsed()),
                }
            }
            rec
        }));
    }
    let mut recorder = Recorder::default();
    for t in tasks {
        recorder.merge(&t.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let peak_rss_mib = rss.finish();
    svc.stop();
    Ok(Throughput {
        per_second: accepted.load(Ordering::Relaxed) as f64 / elapsed,
        recorder,
        peak_rss_mib,
    })
}
