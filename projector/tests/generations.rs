//! Read models follow the schema blue/green: a read-model change rebuilds a new version
//! beside the live one while queries keep answering, switches them over with no gap or
//! double count, and retires the old version after its grace period; the upgrade to this
//! release's rollups (migration V9) on a store with events does exactly that.

use std::time::Duration;

use test_support::events::{eventually, plan, Writer, TENANTS};
use test_support::pipeline::{range, Pipeline};
use test_support::{Harness, TestDb};

const WAIT: Duration = Duration::from_secs(60);

async fn active(pool: &sqlx::PgPool) -> i32 {
    read_model::versions::active(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_model_change_rebuilds_beside_the_live_version_while_queries_answer() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let written = Writer::new(pool.clone()).write(plan(2001, 120), 3).await;
    assert!(written > 0);

    let h = Harness::on(db).await;
    let tuning = projector::ProjectorSettings {
        retire_after: Duration::from_secs(2),
        ..h.tuning()
    };
    let p = Pipeline::on(h, tuning).await;
    let key = p.tenant(TENANTS[0]).await;
    p.settle().await;
    p.h.assert_verified(1).await;
    let window = range("2024-02-29T00:00:00Z", "2024-03-03T00:00:00Z");
    let query = format!("{window}&metrics=counts,rates,latency&bucket=hour&group_by=channel");
    let before = p.stats(&key, &query).await;
    assert!(before["totals"]["counts"]["delivered"].as_i64().unwrap() > 0);

    // What a later release's read-model-changing migration does.
    sqlx::query("SELECT herald_read_model_changed('test: a new read-model shape')")
        .execute(&p.h.pool)
        .await
        .unwrap();

    // Queries run throughout; each is attributed to a version when the active version is
    // the same just before and just after it.
    let mut answers: Vec<(i32, serde_json::Value)> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut after_switch = 0;
    while after_switch < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no switch to version 2"
        );
        let v0 = active(&p.h.pool).await;
        let (status, body) = p.get(&key, &format!("/v1/stats/messages?{query}")).await;
        let v1 = active(&p.h.pool).await;
        assert_eq!(status, 200, "{body}");
        if v0 == v1 {
            answers.push((v0, body));
        }
        if v0 == 2 {
            after_switch += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let from_old = answers.iter().filter(|(v, _)| *v == 1).count();
    let from_new = answers.iter().filter(|(v, _)| *v == 2).count();
    assert!(
        from_old > 0 && from_new > 0,
        "{from_old} old, {from_new} new"
    );
    for (version, body) in &answers {
        assert_eq!(body["series"], before["series"], "version {version}");
        assert_eq!(body["totals"], before["totals"], "version {version}");
    }
    let (state, generation): (String, i32) =
        sqlx::query_as("SELECT state, generation FROM read_model_versions WHERE version = 2")
            .fetch_one(&p.h.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), generation), ("live", 3));
    p.h.assert_verified(2).await;

    // New commands reach the new version; the old one is retired after its grace period.
    p.h.write(plan(2002, 20), 2).await;
    p.settle().await;
    p.h.assert_verified(2).await;
    // Retiring marks the version first (projectors stop writing it), then deletes its
    // rows: both must happen.
    eventually(WAIT, "version 1 retired and its rows gone", || async {
        let (state, left): (String, i64) = sqlx::query_as(
            "SELECT state, (SELECT count(*) FROM message_events WHERE version = 1) \
               FROM read_model_versions WHERE version = 1",
        )
        .fetch_one(&p.h.pool)
        .await
        .unwrap();
        (state == "retired" && left == 0).then_some(())
    })
    .await;
    // Only one version was built for the one change, whichever replica noticed it.
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM read_model_versions")
        .fetch_one(&p.h.pool)
        .await
        .unwrap();
    assert_eq!(versions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_build_cut_short_is_resumed_and_an_operator_rebuild_waits_its_turn() {
    let h = Harness::new().await;
    h.write(plan(2003, 60), 2).await;
    let tuning = h.tuning();
    // A version of the required generation a crashed builder left behind, part-built.
    sqlx::query("SELECT herald_read_model_changed('test: resume')")
        .execute(&h.pool)
        .await
        .unwrap();
    let ctx = h.context(tuning.clone()).await;
    let version = projector::admin::new_version(&ctx, 3).await.unwrap();
    assert_eq!(version, 2);
    // While someone holds the build lock, an operator's rebuild is refused, not queued.
    let lock = projector::admin::RebuildLock::try_take(&h.pool)
        .await
        .unwrap()
        .expect("free");
    let refused = projector::admin::rebuild(&ctx).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("another read-model build is running"),
        "{refused}"
    );
    // And no projector builds either.
    assert_eq!(
        projector::generations::once(&ctx).await.unwrap(),
        projector::generations::Round::default()
    );
    drop(lock);

    let app = h.start("projector-1", tuning).await;
    eventually(WAIT, "version 2 active", || async {
        (read_model::versions::active(&h.pool).await.ok()? == 2).then_some(())
    })
    .await;
    h.wait_projected(2, WAIT).await;
    h.assert_verified(2).await;
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM read_model_versions")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(
        versions, 2,
        "the half-built version was resumed, not abandoned"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_upgrade_to_this_releases_rollups_rebuilds_a_store_with_events() {
    // The previous release's schema (V8), with events in it.
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(8)).await.unwrap();
    let written = Writer::new(db.pool().await).write(plan(2004, 80), 3).await;
    assert!(written > 0);
    let h = Harness::on(db).await;
    let p = Pipeline::on(h, test_support::pipeline::fast_projector()).await;
    let key = p.tenant(TENANTS[1]).await;
    let query = format!(
        "{}&metrics=counts,latency&bucket=hour",
        range("2024-02-29T00:00:00Z", "2024-03-03T00:00:00Z")
    );
    // Until the new version is active, the generation-1 version answers (this release never
    // projects it: it is what the previous release left, here nothing).
    eventually(WAIT, "the generation-2 version active", || async {
        let (status, body) = p.get(&key, &format!("/v1/stats/messages?{query}")).await;
        assert_eq!(status, 200, "{body}");
        (active(&p.h.pool).await == 2).then_some(())
    })
    .await;
    p.settle().await;
    p.h.assert_verified(2).await;
    let rollup = p.stats(&key, &format!("{query}&source=rollup")).await;
    let raw = p.stats(&key, &format!("{query}&source=raw")).await;
    assert_eq!(rollup["level"], "1h");
    assert_eq!(rollup["series"], raw["series"]);
    assert_eq!(rollup["totals"], raw["totals"]);
    assert!(rollup["totals"]["counts"]["queued"].as_i64().unwrap() > 0);
    let frozen: i64 = sqlx::query_scalar("SELECT count(*) FROM message_events WHERE version = 1")
        .fetch_one(&p.h.pool)
        .await
        .unwrap();
    assert_eq!(frozen, 0, "nothing projects a generation-1 version");
    let generation: i32 =
        sqlx::query_scalar("SELECT generation FROM read_model_versions WHERE version = 2")
            .fetch_one(&p.h.pool)
            .await
            .unwrap();
    assert_eq!(generation, 2);
}
