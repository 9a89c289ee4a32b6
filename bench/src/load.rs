//! The load generator's engine, used by `herald-load` and the benchmark suite.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workload::{self, ChannelMix, Rng};
use crate::Recorder;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Command service base URL.
    pub url: String,
    /// API keys; messages are spread across them.
    pub keys: Vec<String>,
    /// New messages per second (0: as fast as possible).
    pub rate: f64,
    /// Concurrent clients.
    pub concurrency: usize,
    /// How long to submit new messages.
    pub duration: Duration,
    /// Channel mix.
    pub mix: ChannelMix,
    /// Percent of reports sent twice.
    pub duplicates: u64,
    /// Percent of messages with two reports swapped.
    pub reorder: u64,
    /// Multiplies provider delays.
    pub time_scale: f64,
    /// Only submit.
    pub submit_only: bool,
    /// Workload seed.
    pub seed: u64,
}

/// Live counters, for a progress line.
#[derive(Default, Debug)]
pub struct Progress {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Answered 2xx.
    pub ok: AtomicU64,
    /// Anything else.
    pub failed: AtomicU64,
}

/// What a run measured.
pub struct LoadReport {
    /// The latency of each submit.
    pub submits: Recorder,
    /// The latency of each observation.
    pub observations: Recorder,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs `config` to completion (submitting for `duration`, then sending the observations
/// still due), updating `progress` as it goes.
pub async fn run(config: LoadConfig, progress: Arc<Progress>) -> LoadReport {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .build()
        .expect("HTTP client");
    let config = Arc::new(config);
    let start = Instant::now();
    let workers: Vec<_> = (0..config.concurrency)
        .map(|i| {
            tokio::spawn(worker(
                i,
                config.clone(),
                client.clone(),
                progress.clone(),
                start,
            ))
        })
        .collect();
    let mut submits = Recorder::default();
    let mut observations = Recorder::default();
    for w in workers {
        let o = w.await.expect("load worker");
        submits.merge(&o.submits);
        observations.merge(&o.observations);
    }
    LoadReport {
        submits,
        observations,
        elapsed: start.elapsed(),
    }
}

struct Due {
    at: Instant,
    message_id: String,
    key: usize,
    body: Value,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

struct Outcome {
    submits: Recorder,
    observations: Recorder,
}

async fn worker(
    id: usize,
    args: Arc<LoadConfig>,
    client: reqwest::Client,
    progress: Arc<Progress>,
    start: Instant,
) -> Outcome {
    let mix: ChannelMix = args.mix;
    let mut rng = Rng((args.seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1));
    let mut submits = Recorder::default();
    let mut observations = Recorder::default();
    let mut due: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let interval = if args.rate > 0.0 {
        Some(Duration::from_secs_f64(args.concurrency as f64 / args.rate))
    } else {
        None
    };
    let stop_submitting = start + args.duration;
    let mut next_submit = start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(id as f64 / args.concurrency as f64)
        });
    let mut seq = id as u64;
    loop {
        let now = Instant::now();
        let submitting = next_submit < stop_submitting;
        let next_obs = due.peek().map(|d| d.0.at);
        let (is_submit, wake) = match (submitting, next_obs) {
            (false, None) => break,
            (true, None) => (true, next_submit),
            (false, Some(o)) => (false, o),
            (true, Some(o)) => {
                if next_submit <= o {
                    (true, next_submit)
                } else {
                    (false, o)
                }
            }
        };
        if wake > now {
            tokio::time::sleep(wake - now).await;
        }
        let t = Instant::now();
        if is_submit {
            seq += args.concurrency as u64;
            next_submit = match interval {
                Some(i) => next_submit + i,
                None => Instant::now(),
            };
            let plan = workload::message(
                &mut rng,
                mix,
                seq,
                args.duplicates,
                args.reorder,
                args.time_scale,
            );
            let key = (seq as usize) % args.keys.len();
            let result = client
                .post(format!("{}/v1/messages", args.url))
                .bearer_auth(&args.keys[key])
                .json(&plan.submit)
                .send()
                .await;
            let (status, body) = match result {
                Ok(r) => {
                    let s = r.status().as_u16();
                    (s, r.json::<Value>().await.ok())
                }
                Err(_) => (0, None),
            };
            submits.record(status, t.elapsed());
            count(&progress, status);
            if let (false, Some(id)) = (
                args.submit_only,
                body.as_ref().and_then(|b| b["message_id"].as_str()),
            ) {
                let accepted = Instant::now();
                for step in plan.steps {
                    due.push(Reverse(Due {
                        at: accepted + step.after,
                        message_id: id.to_string(),
                        key,
                        body: step.observation,
                    }));
                }
            }
        } else {
            let d = due.pop().expect("peeked").0;
            let result = client
                .post(format!(
                    "{}/v1/messages/{}/observations",
                    args.url, d.message_id
                ))
                .bearer_auth(&args.keys[d.key])
                .json(&d.body)
                .send()
                .await;
            let status = match result {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s
                }
                Err(_) => 0,
            };
            observations.record(status, t.elapsed());
            count(&progress, status);
        }
    }
    Outcome {
        submits,
        observations,
    }
}

fn count(progress: &Progress, status: u16) {
    progress.sent.fetch_add(1, Ordering::Relaxed);
    if (200..300).contains(&status) {
        progress.ok.fetch_add(1, Ordering::Relaxed);
    } else {
        progress.failed.fetch_add(1, Ordering::Relaxed);
    }
}
