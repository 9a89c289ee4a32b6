//! `projector verify`: the oracle agrees with a correctly projected store, and each
//! deliberately planted projector bug makes it fail, naming the table and column.
//!
//! A bug is planted as the rows a projector with that bug would have written, changed in
//! place after a correct projection (the projector is stopped first, so nothing repairs
//! them).

use std::time::Duration;

use oracle::{Options, Report, Scope};
use test_support::events::{plan, TENANTS};
use test_support::Harness;

const WAIT: Duration = Duration::from_secs(60);

/// A store of `n` messages, projected, with the projector stopped.
async fn projected(seed: u64, n: usize) -> Harness {
    let h = Harness::new().await;
    let projector = h.start("projector-1", h.tuning()).await;
    h.write(plan(seed, n), 4).await;
    h.wait_projected(1, WAIT).await;
    projector.stop().await;
    h
}

async fn verify_with(h: &Harness, scope: Scope) -> Report {
    let options = Options {
        version: Some(1),
        scope,
        shards: h.settings.stream_shards,
        caught_up: true,
        chunk: 17,
        ..Options::default()
    };
    oracle::verify(&h.pool, &options, |_| {})
        .await
        .expect("verify runs")
}

/// The report fails, and one of its first differences is in `table`, column `column`.
fn assert_caught(report: &Report, table: &str, column: &str) {
    assert!(!report.is_clean(), "the planted bug went unseen:\n{report}");
    assert!(
        report
            .differences
            .first
            .iter()
            .any(|d| d.table == table && d.column == column),
        "expected a difference in {table}.{column}:\n{report}"
    );
}

async fn execute(h: &Harness, sql: &str) -> u64 {
    sqlx::query(sql)
        .execute(&h.pool)
        .await
        .expect("plant")
        .rows_affected()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_oracle_agrees_with_a_projection_of_every_kind_of_event() {
    let h = projected(309, 200).await;
    let mut types: Vec<String> = sqlx::query_scalar("SELECT DISTINCT event_type FROM events")
        .fetch_all(&h.pool)
        .await
        .unwrap();
    types.sort();
    let mut all: Vec<String> = domain::MessageEvent::EVENT_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect();
    all.sort();
    assert_eq!(types, all, "the workload misses an event type");
    let scheduled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE version = 1 AND scheduled_at IS NOT NULL",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(scheduled > 0);
    let report = h.verify(1).await;
    assert_eq!(report.messages, 200);
    assert!(report.rollup_rows.unwrap() > 0 && report.checkpoints == Some(4));
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bucket_off_by_one_fails_verify() {
    let h = projected(301, 60).await;
    h.assert_verified(1).await;
    // A projector that bucketed by the end of the quarter hour: the last bucket of one
    // tenant lands one bucket later.
    let moved = execute(
        &h,
        "UPDATE message_rollup_15m SET bucket = bucket + interval '15 minutes' \
         WHERE version = 1 AND tenant_id = '00000000-0000-0000-0000-0000000000a1' \
           AND bucket = (SELECT max(bucket) FROM message_rollup_15m WHERE version = 1 \
                         AND tenant_id = '00000000-0000-0000-0000-0000000000a1')",
    )
    .await;
    assert!(moved > 0);
    let report = h.verify(1).await;
    assert_caught(&report, "message_rollup_15m", "(row)");
    // Twice the moved rows: each is missing where it belongs and unexpected where it is.
    assert_eq!(
        report.differences.per_table["message_rollup_15m"],
        2 * moved
    );
    assert_eq!(report.differences.total(), 2 * moved, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_tag_row_fails_verify() {
    let h = projected(302, 60).await;
    h.assert_verified(1).await;
    // A projector that forgot one tag of one event's counters.
    let dropped = execute(
        &h,
        "DELETE FROM message_rollup_1h WHERE (version, tenant_id, bucket, channel, provider, \
           tag) IN (SELECT version, tenant_id, bucket, channel, provider, tag \
           FROM message_rollup_1h WHERE version = 1 AND tag <> '' \
           ORDER BY bucket, tag LIMIT 1)",
    )
    .await;
    assert_eq!(dropped, 1);
    let report = h.verify(1).await;
    assert_caught(&report, "message_rollup_1h", "(row)");
    assert_eq!(report.differences.total(), 1, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_latency_taken_from_the_wrong_field_fails_verify() {
    let h = projected(303, 60).await;
    h.assert_verified(1).await;
    // A projector that stored the dispatch latency as the submit latency.
    let events = execute(
        &h,
        "UPDATE message_events SET latency_ms_from_submit = latency_ms_from_dispatch \
         WHERE version = 1 AND latency_ms_from_dispatch IS NOT NULL \
           AND latency_ms_from_submit IS DISTINCT FROM latency_ms_from_dispatch",
    )
    .await;
    let messages = execute(
        &h,
        "UPDATE messages SET latency_ms_from_submit = latency_ms_from_dispatch \
         WHERE version = 1 AND latency_ms_from_dispatch IS NOT NULL \
           AND latency_ms_from_submit IS DISTINCT FROM latency_ms_from_dispatch",
    )
    .await;
    assert!(events > 0 && messages > 0);
    let report = h.verify(1).await;
    assert_caught(&report, "message_events", "latency_ms_from_submit");
    assert_eq!(report.differences.per_table["message_events"], events);
    assert_eq!(report.differences.per_table["messages"], messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_planted_faults_fail_verify_in_the_table_they_touch() {
    let h = projected(304, 40).await;
    h.assert_verified(1).await;
    let plants: [(&str, &str, &str, &str); 5] = [
        (
            "UPDATE message_rollup_1h SET submit_sketch = (SELECT herald_sketch_of(array_agg(bin + 1), \
             array_agg(samples)) FROM herald_sketch_bins(submit_sketch)) \
             WHERE (tenant_id, bucket, channel, provider, tag) IN (SELECT tenant_id, bucket, \
             channel, provider, tag FROM message_rollup_1h WHERE version = 1 \
             AND submit_sketch <> '' ORDER BY bucket, tag LIMIT 1)",
            "UPDATE message_rollup_1h SET submit_sketch = (SELECT herald_sketch_of(array_agg(bin - 1), \
             array_agg(samples)) FROM herald_sketch_bins(submit_sketch)) \
             WHERE (tenant_id, bucket, channel, provider, tag) IN (SELECT tenant_id, bucket, \
             channel, provider, tag FROM message_rollup_1h WHERE version = 1 \
             AND submit_sketch <> '' ORDER BY bucket, tag LIMIT 1)",
            "message_rollup_1h",
            "submit_to_delivered sketch",
        ),
        (
            "UPDATE message_rollup_1d SET engaged_first[1] = engaged_first[1] + 1 \
             WHERE version = 1 AND tag = '' AND engaged[1] > 0",
            "UPDATE message_rollup_1d SET engaged_first[1] = engaged_first[1] - 1 \
             WHERE version = 1 AND tag = '' AND engaged[1] > 0",
            "message_rollup_1d",
            "engaged_first[opened]",
        ),
        (
            "UPDATE messages SET tags = array_append(tags, 'stray') WHERE version = 1 \
             AND message_id = (SELECT message_id FROM messages WHERE version = 1 ORDER BY message_id LIMIT 1)",
            "UPDATE messages SET tags = array_remove(tags, 'stray') WHERE version = 1",
            "messages",
            "tags",
        ),
        (
            "UPDATE message_events SET occurred_at = occurred_at + interval '1 ms' \
             WHERE version = 1 AND sequence = 2 AND message_id = \
             (SELECT message_id FROM message_events WHERE version = 1 AND sequence = 2 \
             ORDER BY message_id LIMIT 1)",
            "UPDATE message_events SET occurred_at = occurred_at - interval '1 ms' \
             WHERE version = 1 AND sequence = 2 AND message_id = \
             (SELECT message_id FROM message_events WHERE version = 1 AND sequence = 2 \
             ORDER BY message_id LIMIT 1)",
            "message_events",
            "occurred_at",
        ),
        (
            "UPDATE projection_checkpoints SET events = events + 1 WHERE shard = 0",
            "UPDATE projection_checkpoints SET events = events - 1 WHERE shard = 0",
            "projection_checkpoints",
            "events",
        ),
    ];
    for (plant, undo, table, column) in plants {
        assert!(execute(&h, plant).await > 0, "{plant}");
        assert_caught(&h.verify(1).await, table, column);
        execute(&h, undo).await;
        let report = h.verify(1).await;
        assert!(report.is_clean(), "undoing {table} left:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scopes_see_the_differences_inside_them_and_only_those() {
    let h = projected(305, 60).await;
    let tenant_b = TENANTS[1];
    // A double-counted event in one bucket of tenant A.
    let (bucket,): (chrono::DateTime<chrono::Utc>,) = sqlx::query_as(
        "SELECT min(bucket) FROM message_rollup_15m WHERE version = 1 AND tenant_id = $1 \
         AND entered[2] > 0",
    )
    .bind(TENANTS[0])
    .fetch_one(&h.pool)
    .await
    .unwrap();
    let planted = sqlx::query(
        "UPDATE message_rollup_15m SET entered[2] = entered[2] + 1 WHERE version = 1 \
         AND tenant_id = $1 AND bucket = $2 AND tag = ''",
    )
    .bind(TENANTS[0])
    .bind(bucket)
    .execute(&h.pool)
    .await
    .unwrap()
    .rows_affected();
    assert!(planted > 0);

    let all = verify_with(&h, Scope::All).await;
    assert_caught(&all, "message_rollup_15m", "entered[queued]");
    let a = verify_with(&h, Scope::Tenant(TENANTS[0])).await;
    assert_caught(&a, "message_rollup_15m", "entered[queued]");
    let b = verify_with(&h, Scope::Tenant(tenant_b)).await;
    assert!(b.is_clean(), "{b}");
    assert!(b.messages > 0 && b.messages < all.messages);

    let inside = verify_with(
        &h,
        Scope::Window {
            from: bucket,
            to: bucket + chrono::Duration::minutes(15),
        },
    )
    .await;
    assert_caught(&inside, "message_rollup_15m", "entered[queued]");
    assert!(inside.rollup_rows.unwrap() > 0);
    let later = verify_with(
        &h,
        Scope::Window {
            from: bucket + chrono::Duration::minutes(15),
            to: bucket + chrono::Duration::hours(4),
        },
    )
    .await;
    assert!(later.is_clean(), "{later}");
    assert!(later.rollup_rows.unwrap() > 0);

    let sample = verify_with(
        &h,
        Scope::Sample {
            messages: 10,
            seed: "s".into(),
        },
    )
    .await;
    assert_eq!(sample.messages, 10);
    assert!(
        sample.is_clean() && sample.rollup_rows.is_none(),
        "{sample}"
    );
    // A sample's rows are checked: break one of them and the same sample sees it.
    let (first,): (String,) = sqlx::query_as(
        "SELECT aggregate_id FROM events WHERE sequence = 1 ORDER BY md5(aggregate_id || 's') \
         LIMIT 1",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE messages SET provider = 'other' WHERE message_id = $1::uuid")
        .bind(&first)
        .execute(&h.pool)
        .await
        .unwrap();
    let again = verify_with(
        &h,
        Scope::Sample {
            messages: 10,
            seed: "s".into(),
        },
    )
    .await;
    assert_caught(&again, "messages", "provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_sees_a_lagging_read_model_only_when_asked_to_and_rows_beyond_the_store() {
    let h = projected(306, 30).await;
    // Events the projector (stopped) never applied: consistent as of the checkpoints...
    h.write(plan(307, 10), 2).await;
    let lagging = Options {
        caught_up: false,
        ..Options::default()
    };
    let report = oracle::verify(
        &h.pool,
        &Options {
            shards: h.settings.stream_shards,
            ..lagging
        },
        |_| {},
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.pending > 0);
    // ...but not caught up.
    let report = h.verify(1).await;
    assert_caught(&report, "projection_checkpoints", "(cursor)");

    // A row for a message the event store never held.
    sqlx::query(
        "INSERT INTO messages (version, message_id, tenant_id, channel, provider, status, \
         last_sequence, last_event_type, last_occurred_at) \
         VALUES (1, gen_random_uuid(), $1, 'email', 'ses', 'queued', 1, 'MessageSubmitted', now())",
    )
    .bind(TENANTS[0])
    .execute(&h.pool)
    .await
    .unwrap();
    let report = oracle::verify(
        &h.pool,
        &Options {
            shards: h.settings.stream_shards,
            ..Options::default()
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_caught(&report, "messages", "(row)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_verifies_and_its_exit_status_says_whether_it_matched() {
    let h = projected(308, 30).await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
            .args(args)
            .env("HERALD_DATABASE_URL", &h.db.url)
            .env("HERALD_READ_DATABASE_URL", "")
            .env("HERALD_REDIS_URL", &h.settings.redis_url)
            .env("HERALD_REDIS_PREFIX", &h.settings.redis_prefix)
            .env("HERALD_STREAM_SHARDS", h.settings.stream_shards.to_string())
            .env("HERALD_PUSHGATEWAY_URL", "")
            .env("RUST_LOG", "error")
            .output()
            .expect("run the projector binary")
    };
    let out = run(&["verify", "--caught-up"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("differences  none"), "{stdout}");
    assert!(stdout.contains("30 checked"), "{stdout}");

    execute(
        &h,
        // Message ids are random: the first one may be `failed` already, so its status is
        // changed to one it does not have.
        "UPDATE messages SET status = CASE WHEN status = 'failed' THEN 'delivered' ELSE 'failed' END \
         WHERE version = 1 \
         AND message_id = (SELECT message_id FROM messages WHERE version = 1 ORDER BY message_id LIMIT 1)",
    )
    .await;
    let out = run(&["verify", "--chunk", "7"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout.contains("messages ["), "{stdout}");
    assert!(stdout.contains("status: expected"), "{stdout}");

    let out = run(&["verify", "--tenant", "not-a-uuid"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(&["verify", "--from", "2024-03-01T09:00:00Z"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(&["verify", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--caught-up"));
}
