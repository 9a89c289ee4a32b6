//! `herald-bench`: the benchmark suite. Every figure is measured beside its baseline in the
//! same run, on the same machine, so the ratios mean something even when absolute numbers
//! drift. Results print as a Markdown table and are written to `target/bench/results.json`.

use std::time::Duration;

use bench::env::BenchEnv;
use bench::ingest;
use bench::report::{markdown, Figure};
use clap::Parser;

/// Herald's benchmark suite.
#[derive(Parser, Debug)]
#[command(name = "herald-bench")]
struct Args {
    /// Scenarios to run (comma-separated): ingest, batch, or all.
    #[arg(long, default_value = "all")]
    only: String,
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Concurrent clients for command ingest.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

fn wants(args: &Args, name: &str) -> bool {
    args.only == "all" || args.only.split(',').any(|s| s.trim() == name)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secs = Duration::from_secs(args.seconds);
    let mut figures: Vec<Figure> = Vec::new();
    let mut memory: Vec<(String, f64)> = Vec::new();

    if wants(&args, "ingest") {
        eprintln!(
            "ingest: Herald command service, {} clients, {secs:?}",
            args.concurrency
        );
        let env = BenchEnv::fresh("ingest").await?;
        let herald = ingest::herald(&env, args.concurrency, secs).await?;
        eprintln!("ingest: direct-insert ceiling");
        let ceiling = ingest::direct_insert(&env, args.concurrency, secs).await?;
        eprintln!("ingest: naive cqrs-es service");
        let naive = ingest::naive(&env, args.concurrency, secs).await?;
        env.cleanup().await?;
        memory.push(("command-service (ingest)".into(), herald.peak_rss_mib));
        figures.push(Figure {
            name: format!("command ingest, {} clients", args.concurrency),
            value: herald.per_second,
            unit: "commands/s".into(),
            baseline: Some("direct INSERT ceiling".into()),
            baseline_value: Some(ceiling.per_second),
            target: ">= 0.60 x ceiling".into(),
            met: Some(herald.per_second >= 0.6 * ceiling.per_second),
        });
        figures.push(Figure {
            name: format!("command ingest, {} clients", args.concurrency),
            value: herald.per_second,
            unit: "commands/s".into(),
            baseline: Some("naive cqrs-es service".into()),
            baseline_value: Some(naive.per_second),
            target: ">= 2 x naive".into(),
            met: Some(herald.per_second >= 2.0 * naive.per_second),
        });
        eprintln!(
            "ingest latency: Herald {} | ceiling {} | naive {}",
            herald.recorder.latency_line(),
            ceiling.recorder.latency_line(),
            naive.recorder.latency_line()
        );
        figures.push(Figure {
            name: "command latency p99".into(),
            value: herald.recorder.quantile_ms(0.99),
            unit: "ms".into(),
            baseline: Some("direct INSERT p99".into()),
            baseline_value: Some(ceiling.recorder.quantile_ms(0.99)),
            target: "reported".into(),
            met: None,
        });
    }

    if wants(&args, "batch") {
        eprintln!("batch: 4 clients x 1000 submits per request, {secs:?}");
        let env = BenchEnv::fresh("batch").await?;
        let batch = ingest::batch(&env, 4, 1000, secs).await?;
        env.cleanup().await?;
        memory.push(("command-service (batch)".into(), batch.peak_rss_mib));
        figures.push(Figure {
            name: "batch ingest".into(),
            value: batch.per_second,
            unit: "events/s".into(),
            baseline: None,
            baseline_value: None,
            target: ">= 50,000 events/s".into(),
            met: Some(batch.per_second >= 50_000.0),
        });
    }

    for (service, mib) in &memory {
        figures.push(Figure {
            name: format!("peak resident memory, {service}"),
            value: *mib,
            unit: "MiB".into(),
            baseline: None,
            baseline_value: None,
            target: "< 100 MiB".into(),
            met: Some(*mib < 100.0),
        });
    }
    let table = markdown(&figures);
    println!("{table}");
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/results.json",
        serde_json::to_string_pretty(&figures)?,
    )?;
    std::fs::write("target/bench/results.md", table)?;
    Ok(())
}
