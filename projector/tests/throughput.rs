//! Benchmark (not a timed test; ignored by default):
//!
//! ```sh
//! cargo test -p projector --release --test throughput -- --ignored --nocapture
//! ```
//!
//! Reports projection throughput (events/s, relay + stream + projector, end to end) beside
//! the ceiling measured in the same run: multi-row INSERTs of the same rows into
//! `message_events` alone; the bulk rebuild's rate; and commit-to-projected latency at a
//! steady 1,000 events/s. `BENCH_EVENTS` sets the backlog size (default 20,000),
//! `BENCH_WORKERS` the projector's `HERALD_PROJECTOR_WORKERS` (default 1).

use std::time::{Duration, Instant};

use cqrs_es::Aggregate;
use sqlx::{Postgres, QueryBuilder};
use test_support::events::plan;
use test_support::Harness;

/// Events of `plan` decided in memory: (aggregate_id, sequence, event_type, payload).
fn decided(plan: test_support::events::Plan) -> Vec<(String, i64, String, serde_json::Value)> {
    let mut out = Vec::new();
    for (id, cmds) in plan.messages {
        let mut state = domain::Message::default();
        let mut seq = 0i64;
        for cmd in cmds {
            for e in domain::decide(&state, cmd).expect("valid") {
                seq += 1;
                out.push((
                    id.to_string(),
                    seq,
                    e.type_name().to_string(),
                    serde_json::to_value(&e).unwrap(),
                ));
                state.apply(e);
            }
        }
    }
    out
}

async fn insert_events(h: &Harness, rows: &[(String, i64, String, serde_json::Value)]) {
    let metadata = serde_json::json!({
        "correlation_id": "bench", "causation_id": "bench",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    });
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) ",
    );
    q.push_values(rows, |mut b, (id, seq, ty, payload)| {
        b.push_bind("Message")
            .push_bind(id)
            .push_bind(seq)
            .push_bind(ty)
            .push_bind("1")
            .push_bind(payload)
            .push_bind(&metadata);
    });
    q.build().execute(&h.pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture, preferably --release"]
async fn projection_throughput_beside_the_insert_ceiling() {
    let target: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let h = Harness::new().await;
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let tuning = projector::ProjectorSettings {
        relay_poll: Duration::from_millis(20),
        workers,
        ..projector::ProjectorSettings::default()
    };
    let app = h.start("bench", tuning.clone()).await;
    // Wait until the projector owns every shard (its groups exist).
    test_support::events::eventually(Duration::from_secs(30), "shards owned", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = $1",
        )
        .bind(0x4850_0001i64)
        .fetch_one(&h.pool)
        .await
        .unwrap();
        (n == tuning.shards as i64).then_some(())
    })
    .await;

    let rows = decided(plan(99, target / 4));
    let n = rows.len();
    let started = Instant::now();
    for chunk in rows.chunks(1_000) {
        insert_events(&h, chunk).await;
    }
    let appended = started.elapsed();
    h.wait_projected(1, Duration::from_secs(600)).await;
    let projected = started.elapsed();
    let live_rate = n as f64 / projected.as_secs_f64();

    // Ceiling: the same rows, multi-row INSERTs into message_events alone (500 per statement,
    // one transaction each, like the projector's batches), as another version.
    let json: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT to_jsonb(m) || jsonb_build_object('version', 99) FROM message_events m \
         WHERE version = 1 ORDER BY global_position",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    let started = Instant::now();
    for chunk in json.chunks(500) {
        sqlx::query(
            "INSERT INTO message_events SELECT * FROM \
             jsonb_populate_recordset(NULL::message_events, $1)",
        )
        .bind(serde_json::Value::Array(chunk.to_vec()))
        .execute(&h.pool)
        .await
        .unwrap();
    }
    let ceiling = n as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DELETE FROM message_events WHERE version = 99")
        .execute(&h.pool)
        .await
        .unwrap();

    // Bulk rebuild straight from the event store.
    let ctx = h.context(tuning.clone()).await;
    let started = Instant::now();
    let version = projector::admin::rebuild(&ctx).await.unwrap();
    let rebuild_rate = n as f64 / started.elapsed().as_secs_f64();
    projector::admin::retire(&ctx, 1).await.unwrap();

    // Commit-to-projected latency at a steady 1,000 events/s for 10 s (10 events every
    // 10 ms, each batch its own transaction).
    let before: i64 = sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    let steady = decided(plan(100, 2_600));
    let steady = &steady[..10_000.min(steady.len())];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for chunk in steady.chunks(10) {
        tick.tick().await;
        insert_events(&h, chunk).await;
    }
    h.wait_projected(version, Duration::from_secs(120)).await;
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY d), max(d) FROM ( \
           SELECT (extract(epoch FROM m.projected_at - e.recorded_at) * 1000)::float8 AS d \
           FROM message_events m JOIN events e ON e.global_position = m.global_position \
           WHERE m.version = $1 AND e.global_position > $2) x",
    )
    .bind(version)
    .bind(before)
    .fetch_one(&h.pool)
    .await
    .unwrap();

    println!("events:                         {n} ({workers} worker(s) per version)");
    println!("appended in:                    {appended:?}");
    println!("projected (relay+stream+tx):    {live_rate:.0} events/s");
    println!("ceiling (INSERT message_events): {ceiling:.0} events/s");
    println!("ratio:                          {:.2}", live_rate / ceiling);
    println!("bulk rebuild:                   {rebuild_rate:.0} events/s");
    println!(
        "commit-to-projected at 1000/s:  p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms \
         ({} events)",
        steady.len()
    );
    app.stop().await;
}
