//! `herald-bench`: the benchmark suite. Every figure is measured beside its baseline in the
//! same run, on the same machine, so the ratios mean something even when absolute numbers
//! drift. Results print as a Markdown table and are written to `target/bench/results.json`.

use std::time::Duration;

use bench::env::BenchEnv;
use bench::report::{markdown, Figure};
use bench::{ingest, readside};
use clap::Parser;

/// Herald's benchmark suite.
#[derive(Parser, Debug)]
#[command(name = "herald-bench")]
struct Args {
    /// Scenarios to run (comma-separated): ingest, batch, projection, freshness, fairness,
    /// queries (which also measures the rebuild that builds its data), or all.
    #[arg(long, default_value = "all")]
    only: String,
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Concurrent clients for command ingest.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events generated for the projection measurement.
    #[arg(long, default_value_t = 200_000)]
    projection_events: usize,
    /// Data set sizes (events over 30 days, comma-separated) for the query measurements; the
    /// rebuild is measured on the largest. Query time is compared between the smallest and
    /// the largest, to show how it grows with data.
    #[arg(long, default_value = "1000000,10000000", value_delimiter = ',')]
    query_events: Vec<usize>,
    /// Commands per second for the freshness measurement.
    #[arg(long, default_value_t = 1_000.0)]
    freshness_rate: f64,
    /// Requests per second of each tenant's quota in the fairness scenario (the noisy tenant
    /// sends ten times this).
    #[arg(long, default_value_t = 200)]
    fairness_quota: u32,
    /// Requests per second of the steady tenant in the fairness scenario (within its quota).
    #[arg(long, default_value_t = 100.0)]
    fairness_steady: f64,
    /// Keep the query data set's database (herald_bench_queries) for inspection.
    #[arg(long)]
    keep: bool,
    /// Runs of each query.
    #[arg(long, default_value_t = 30)]
    query_runs: usize,
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

    if wants(&args, "projection") {
        eprintln!(
            "projection: {} events generated, then a projector process",
            args.projection_events
        );
        let env = BenchEnv::fresh("projection").await?;
        let (rate, ceiling, peak) = readside::projection(&env, args.projection_events).await?;
        env.cleanup().await?;
        memory.push(("projector (projection)".into(), peak));
        figures.push(Figure {
            name: "projection, event store to read models".into(),
            value: rate,
            unit: "events/s".into(),
            baseline: Some("multi-row INSERT into message_events".into()),
            baseline_value: Some(ceiling),
            target: ">= 1/3 x ceiling".into(),
            met: Some(rate >= ceiling / 3.0),
        });
    }

    if wants(&args, "freshness") {
        eprintln!("freshness: {} commands/s for {secs:?}", args.freshness_rate);
        let env = BenchEnv::fresh("freshness").await?;
        let (p50, p99, peaks) = readside::freshness(&env, args.freshness_rate, secs).await?;
        env.cleanup().await?;
        for (name, mib) in ["command-service", "projector", "query-service"]
            .iter()
            .zip(peaks)
        {
            memory.push((
                format!("{name} (freshness, {} commands/s)", args.freshness_rate),
                mib,
            ));
        }
        figures.push(Figure {
            name: format!(
                "freshness p50, commit to read model, {} commands/s",
                args.freshness_rate
            ),
            value: p50,
            unit: "ms".into(),
            baseline: None,
            baseline_value: None,
            target: "reported".into(),
            met: None,
        });
        figures.push(Figure {
            name: format!(
                "freshness p99, commit to read model, {} commands/s",
                args.freshness_rate
            ),
            value: p99,
            unit: "ms".into(),
            baseline: None,
            baseline_value: None,
            target: "< 100 ms".into(),
            met: Some(p99 < 100.0),
        });
    }

    if wants(&args, "fairness") {
        eprintln!(
            "fairness: a tenant at {} requests/s, alone and beside one sending {} (10 x its \
             quota of {}), {secs:?} each, alternating {} times",
            args.fairness_steady,
            10 * args.fairness_quota,
            args.fairness_quota,
            bench::fairness::ROUNDS
        );
        let env = BenchEnv::fresh("fairness").await?;
        let f = bench::fairness::run(&env, args.fairness_quota, args.fairness_steady, secs).await?;
        env.cleanup().await?;
        memory.push(("command-service (fairness)".into(), f.peak_rss_mib));
        eprintln!(
            "fairness: steady alone {} ({}); steady flooded {} ({}); noisy {} ({})",
            f.alone.latency_line(),
            f.alone.errors_line(),
            f.flooded.latency_line(),
            f.flooded.errors_line(),
            f.noisy.latency_line(),
            f.noisy.errors_line()
        );
        let alone_p99 = f.alone.quantile_ms(0.99);
        let flooded_p99 = f.flooded.quantile_ms(0.99);
        figures.push(Figure {
            name: "fair share: steady tenant's p99 while a neighbour sends 10 x its quota".into(),
            value: flooded_p99,
            unit: "ms".into(),
            baseline: Some("the steady tenant's p99 alone".into()),
            baseline_value: Some(alone_p99),
            target: "<= 1.5 x alone".into(),
            met: Some(flooded_p99 <= 1.5 * alone_p99),
        });
        let health_p99 = f.beside_health.quantile_ms(0.99);
        eprintln!(
            "fairness: steady beside the same rate of GET /health/live {} ({})",
            f.beside_health.latency_line(),
            f.beside_health.errors_line()
        );
        figures.push(Figure {
            name: "fair share: steady tenant's p99 while the same rate of GET /health/live arrives"
                .into(),
            value: health_p99,
            unit: "ms".into(),
            baseline: Some("the steady tenant's p99 alone".into()),
            baseline_value: Some(alone_p99),
            target: "reported: what any flood costs on this machine".into(),
            met: None,
        });
        let refused = f.flooded.count() - f.flooded.ok();
        figures.push(Figure {
            name: format!(
                "fair share: steady tenant's answers other than 202 during the flood (of {})",
                f.flooded.count()
            ),
            value: refused as f64,
            unit: "answers".into(),
            baseline: None,
            baseline_value: None,
            target: "0".into(),
            met: Some(refused == 0),
        });
        // The burst (one quota's worth) refills during each phase the noisy tenant is quiet.
        let secs_flooded = f.elapsed.as_secs_f64();
        let admitted = f.noisy.ok() as f64 / secs_flooded;
        let allowed =
            f64::from(args.fairness_quota) * (1.0 + bench::fairness::ROUNDS as f64 / secs_flooded);
        figures.push(Figure {
            name: format!(
                "fair share: noisy tenant's accepted commands (it sent {:.0}/s)",
                f.noisy.count() as f64 / secs_flooded
            ),
            value: admitted,
            unit: "commands/s".into(),
            baseline: Some("its quota, with one burst per flood".into()),
            baseline_value: Some(allowed),
            target: "<= quota".into(),
            met: Some(admitted <= allowed),
        });
    }

    if wants(&args, "queries") {
        let mut sizes = args.query_events.clone();
        sizes.sort_unstable();
        let largest = *sizes.last().expect("at least one data set size");
        // shape → p50 per size, for the growth figures.
        let mut p50s: Vec<(String, Vec<(usize, f64)>)> = Vec::new();
        for &events in &sizes {
            eprintln!("queries: generating {events} events over 30 days");
            let env = BenchEnv::fresh("queries").await?;
            let tenant = uuid::Uuid::new_v4();
            let end = chrono::Utc::now();
            let spec = bench::generate::Spec {
                events,
                tenant,
                end,
                days: 30,
                writers: 2,
            };
            bench::generate::generate(&env.db_url, &spec).await?;
            eprintln!("queries: rebuilding the read models from the event store");
            let rebuild = readside::rebuild(&env).await?;
            if events == largest {
                figures.push(Figure {
                    name: format!("rebuild from the event store ({events} events)"),
                    value: rebuild,
                    unit: "events/s".into(),
                    baseline: None,
                    baseline_value: None,
                    target: ">= 100,000 events/s".into(),
                    met: Some(rebuild >= 100_000.0),
                });
            } else {
                eprintln!("queries: rebuild of {events} events at {rebuild:.0} events/s");
            }
            // What autovacuum does after a bulk load, done before measuring: otherwise the
            // queries run beside it (minutes at 10M events) and measure its I/O.
            eprintln!("queries: VACUUM ANALYZE after the rebuild");
            readside::vacuum(&env).await?;
            let (results, peak) = readside::queries(&env, tenant, end, args.query_runs).await?;
            memory.push((format!("query-service (queries, {events} events)"), peak));
            for r in results {
                let (p50, naive50) = (r.herald.quantile_ms(0.5), r.naive.quantile_ms(0.5));
                eprintln!(
                    "{} ({events} events, level {}): Herald {} | naive {}",
                    r.name,
                    r.level,
                    r.herald.latency_line(),
                    r.naive.latency_line()
                );
                let (target, met) = match r.name.as_str() {
                    n if n.starts_with("hour buckets by channel") => (
                        "<= 30 ms and <= 1/300 x naive",
                        p50 <= 30.0 && p50 * 300.0 <= naive50,
                    ),
                    n if n.starts_with("day buckets in Europe/Berlin") => (
                        "<= 50 ms and <= 1/200 x naive",
                        p50 <= 50.0 && p50 * 200.0 <= naive50,
                    ),
                    _ => ("<= 100 ms", p50 <= 100.0),
                };
                figures.push(Figure {
                    name: format!("stats p50: {} ({events} events, level {})", r.name, r.level),
                    value: p50,
                    unit: "ms".into(),
                    baseline: Some("naive time_bucket over message_events, p50".into()),
                    baseline_value: Some(naive50),
                    target: target.into(),
                    met: Some(met),
                });
                figures.push(Figure {
                    name: format!("stats p99: {} ({events} events)", r.name),
                    value: r.herald.quantile_ms(0.99),
                    unit: "ms".into(),
                    baseline: Some("naive time_bucket over message_events, p99".into()),
                    baseline_value: Some(r.naive.quantile_ms(0.99)),
                    target: "reported".into(),
                    met: None,
                });
                match p50s.iter_mut().find(|(n, _)| *n == r.name) {
                    Some((_, v)) => v.push((events, p50)),
                    None => p50s.push((r.name.clone(), vec![(events, p50)])),
                }
            }
            if !args.keep {
                env.cleanup().await?;
            }
        }
        if sizes.len() > 1 {
            for (name, v) in p50s {
                let (small, large) = (v[0], v[v.len() - 1]);
                figures.push(Figure {
                    name: format!(
                        "stats p50 growth from {} to {} events: {name}",
                        small.0, large.0
                    ),
                    value: large.1,
                    unit: "ms".into(),
                    baseline: Some(format!("the same query at {} events", small.0)),
                    baseline_value: Some(small.1),
                    target: "<= 1.5 x".into(),
                    met: Some(large.1 <= 1.5 * small.1),
                });
            }
        }
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
