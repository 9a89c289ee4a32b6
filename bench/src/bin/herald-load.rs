//! `herald-load`: realistic traffic against a running command service.
//!
//! Each worker submits messages at its share of `--rate` and, for every accepted message,
//! sends the provider observations its plan holds after their provider-like delays (with
//! duplicates and out-of-order arrival). A progress line prints every second; a summary
//! (throughput, latency percentiles, errors by status) at the end, as text or `--json`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::workload::{self, ChannelMix, Rng};
use bench::Recorder;
use clap::Parser;
use serde_json::{json, Value};

/// Realistic Herald traffic: submits, then provider observations per message.
#[derive(Parser, Debug, Clone)]
#[command(name = "herald-load")]
struct Args {
    /// Command service base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key(s); repeat for several tenants (messages are spread across them).
    #[arg(long = "key", required = true)]
    keys: Vec<String>,
    /// New messages per second across all workers (0: as fast as possible).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to submit new messages, in seconds (observations due later still go out).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Channel mix in percent.
    #[arg(long, default_value = "email=60,sms=30,push=10")]
    mix: String,
    /// Percent of reports sent twice.
    #[arg(long, default_value_t = 10)]
    duplicates: u64,
    /// Percent of messages whose first two reports arrive swapped.
    #[arg(long, default_value_t = 15)]
    reorder: u64,
    /// Multiplies every provider delay (0 sends observations right after the submit).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Only submit; send no observations.
    #[arg(long)]
    submit_only: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Seed of the workload.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
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
    args: Arc<Args>,
    mix: ChannelMix,
    client: reqwest::Client,
    progress: Arc<Progress>,
    start: Instant,
) -> Outcome {
    let mut rng = Rng((args.seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)).max(1));
    let mut submits = Recorder::default();
    let mut observations = Recorder::default();
    let mut due: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let interval = if args.rate > 0.0 {
        Some(Duration::from_secs_f64(args.concurrency as f64 / args.rate))
    } else {
        None
    };
    let stop_submitting = start + Duration::from_secs_f64(args.duration);
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let mix = ChannelMix::parse(&args.mix).map_err(anyhow::Error::msg)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let reporter = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let sent = progress.sent.load(Ordering::Relaxed);
                eprintln!(
                    "t={:>4.0}s sent={sent} ok={} failed={} rate={}/s",
                    start.elapsed().as_secs_f64(),
                    progress.ok.load(Ordering::Relaxed),
                    progress.failed.load(Ordering::Relaxed),
                    sent - last
                );
                last = sent;
            }
        })
    };
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            tokio::spawn(worker(
                i,
                args.clone(),
                mix,
                client.clone(),
                progress.clone(),
                start,
            ))
        })
        .collect();
    let mut submits = Recorder::default();
    let mut observations = Recorder::default();
    for w in workers {
        let o = w.await?;
        submits.merge(&o.submits);
        observations.merge(&o.observations);
    }
    reporter.abort();
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = submits.clone();
    all.merge(&observations);
    if args.json {
        let part = |r: &Recorder| {
            json!({
                "requests": r.count(), "ok": r.ok(),
                "p50_ms": r.quantile_ms(0.5), "p95_ms": r.quantile_ms(0.95), "p99_ms": r.quantile_ms(0.99),
                "statuses": r.statuses,
            })
        };
        println!(
            "{}",
            json!({
                "seconds": elapsed,
                "throughput_ok_per_s": all.ok() as f64 / elapsed,
                "submits": part(&submits),
                "observations": part(&observations),
                "all": part(&all),
            })
        );
    } else {
        println!(
            "{} requests in {elapsed:.1} s: {:.0} ok/s",
            all.count(),
            all.ok() as f64 / elapsed
        );
        println!(
            "  submits       {:>8}  {}",
            submits.count(),
            submits.latency_line()
        );
        println!(
            "  observations  {:>8}  {}",
            observations.count(),
            observations.latency_line()
        );
        println!("  errors by status: {}", all.errors_line());
    }
    Ok(())
}
