//! Fair share between tenants: a steady tenant's latency alone, then while a neighbour sends
//! ten times its own quota, both through one command service, measured in one run.

use std::sync::Arc;
use std::time::Duration;

use crate::env::{command_service, BenchEnv, PeakRss};
use crate::ingest::submit_load;
use crate::load::{self, Progress};
use crate::Recorder;

/// What the scenario measured.
pub struct Fairness {
    /// The steady tenant's submits with nobody else sending.
    pub alone: Recorder,
    /// The steady tenant's submits during the flood.
    pub flooded: Recorder,
    /// The noisy tenant's submits (202s and 429s).
    pub noisy: Recorder,
    /// The steady tenant's submits while the same rate of `GET /health/live` arrives: the
    /// cheapest request the service answers, with no tenant, key or quota.
    pub beside_health: Recorder,
    /// How long the floods ran, in all.
    pub elapsed: Duration,
    /// Peak resident memory of the command service, MiB.
    pub peak_rss_mib: f64,
}

/// Phases of each kind.
pub const ROUNDS: u64 = 4;

/// Both tenants on one command service whose quota is `quota` requests per second (burst
/// the same): the steady tenant alone at `steady` per second for `duration`, then again
/// while the noisy one sends at ten times `quota`, [`ROUNDS`] times.
pub async fn run(
    env: &BenchEnv,
    quota: u32,
    steady: f64,
    duration: Duration,
) -> anyhow::Result<Fairness> {
    let (svc, port, steady_key) = command_service(
        env,
        &[
            ("HERALD_DB_MAX_CONNECTIONS", "32".into()),
            ("HERALD_QUOTA_REQUESTS_PER_SECOND", quota.to_string()),
            ("HERALD_QUOTA_REQUEST_BURST", quota.to_string()),
            ("HERALD_QUOTA_CONCURRENT_REQUESTS", "64".into()),
        ],
    )
    .await?;
    let (_, noisy_key) = service_kit::auth::ApiKeys::new(env.pool(2).await?)
        .create_tenant(&format!("bench-noisy-{}", uuid::Uuid::new_v4()))
        .await?;
    let url = format!("http://127.0.0.1:{port}");
    let rss = PeakRss::start(svc.pid());
    let calm = |seed: u64| {
        let mut config = submit_load(url.clone(), vec![steady_key.clone()], 8, duration, steady);
        config.seed = seed;
        load::run(config, Arc::new(Progress::default()))
    };
    // Alone and flooded alternate, `ROUNDS` times each: a hiccup of the shared machine then
    // falls on either side alike instead of on whichever phase it happened to hit.
    let mut alone = Recorder::default();
    let mut flooded = Recorder::default();
    let mut noisy = Recorder::default();
    let mut beside_health = Recorder::default();
    let mut elapsed = Duration::ZERO;
    for round in 0..ROUNDS {
        alone.merge(&calm(2 * round).await.submits);
        let mut flood = submit_load(
            url.clone(),
            vec![noisy_key.clone()],
            64,
            duration,
            10.0 * f64::from(quota),
        );
        flood.seed = 1_000 + round;
        let (steady, flood) = tokio::join!(
            calm(2 * round + 1),
            load::run(flood, Arc::new(Progress::default()))
        );
        flooded.merge(&steady.submits);
        noisy.merge(&flood.submits);
        elapsed += flood.elapsed;
        let (steady, _) = tokio::join!(
            calm(2 * round + 100),
            get_flood(
                format!("{url}/health/live"),
                10.0 * f64::from(quota),
                64,
                duration
            )
        );
        beside_health.merge(&steady.submits);
    }
    let peak_rss_mib = rss.finish();
    svc.stop();
    Ok(Fairness {
        alone,
        flooded,
        elapsed,
        noisy,
        beside_health,
        peak_rss_mib,
    })
}

/// `GET url` at `rate` per second from `concurrency` clients for `duration`, paced as the
/// load generator paces submits.
async fn get_flood(url: String, rate: f64, concurrency: usize, duration: Duration) -> Recorder {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("HTTP client");
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(concurrency as f64 / rate);
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut recorder = Recorder::default();
                let mut next = start + interval.mul_f64(i as f64 / concurrency as f64);
                while next < start + duration {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                    let t = std::time::Instant::now();
                    let status = match client.get(&url).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    recorder.record(status, t.elapsed());
                }
                recorder
            })
        })
        .collect();
    let mut all = Recorder::default();
    for w in workers {
        all.merge(&w.await.expect("flood worker"));
    }
    all
}
