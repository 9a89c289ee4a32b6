//! `herald-load`: realistic traffic against a running command service.
//!
//! Each worker submits messages at its share of `--rate` and, for every accepted message,
//! sends the provider observations its plan holds after their provider-like delays (with
//! duplicates and out-of-order arrival). A progress line prints every second; a summary
//! (throughput, latency percentiles, errors by status) at the end, as text or `--json`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench::load::{self, LoadConfig, Progress};
use bench::workload::ChannelMix;
use bench::Recorder;
use clap::Parser;
use serde_json::json;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = LoadConfig {
        url: args.url.clone(),
        keys: args.keys.clone(),
        rate: args.rate,
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration),
        mix: ChannelMix::parse(&args.mix).map_err(anyhow::Error::msg)?,
        duplicates: args.duplicates,
        reorder: args.reorder,
        time_scale: args.time_scale,
        submit_only: args.submit_only,
        seed: args.seed,
    };
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
    let report = load::run(config, progress).await;
    reporter.abort();
    let elapsed = report.elapsed.as_secs_f64();
    let mut all = report.submits.clone();
    all.merge(&report.observations);
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
                "submits": part(&report.submits),
                "observations": part(&report.observations),
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
            report.submits.count(),
            report.submits.latency_line()
        );
        println!(
            "  observations  {:>8}  {}",
            report.observations.count(),
            report.observations.latency_line()
        );
        println!("  errors by status: {}", all.errors_line());
    }
    Ok(())
}
