//! `/health/ready` includes `projector_lag`: a replica answers 503 naming it while the
//! oldest event not yet in the active read model is older than
//! `HERALD_READY_MAX_LAG_SECONDS`, and 200 once the events are projected.

use std::time::Duration;

use service_kit::health::ReadinessReport;
use test_support::events::{eventually, plan};
use test_support::Harness;
use test_support::RunningApp;

async fn ready(client: &reqwest::Client, app: &RunningApp) -> (u16, ReadinessReport) {
    let response = client.get(app.url("/health/ready")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.expect("a readiness report"))
}

#[tokio::test]
async fn readiness_fails_on_projector_lag_until_the_events_are_projected() {
    let h = Harness::new().await;
    let client = reqwest::Client::new();
    // A replica that neither relays nor projects, with a 1 s bound.
    let mut idle = h.tuning();
    idle.relay_enabled = false;
    idle.projector_enabled = false;
    idle.ready_max_lag = Duration::from_secs(1);
    let app = h.start("idle", idle.clone()).await;

    // Nothing written: nothing lags.
    let (status, report) = ready(&client, &app).await;
    assert_eq!(status, 200, "{report:?}");
    assert_eq!(report.checks["projector_lag"], "ok");

    let n = h.write(plan(81, 10), 2).await;
    assert!(n > 0);
    let lagging = || async {
        let (status, report) = ready(&client, &app).await;
        assert_eq!(status, 503, "{report:?}");
        assert_eq!(
            report.failed,
            vec!["projector_lag".to_string()],
            "{report:?}"
        );
        let reason = report.checks["projector_lag"].clone();
        assert!(
            reason.contains(&format!("{n} events not yet projected")),
            "{reason}"
        );
        assert_eq!(report.checks["database"], "ok");
    };
    // Not published: once they are older than the bound, the replica is not ready and
    // says why.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    lagging().await;

    // Published by a relay, but no consumer applies them: still lagging, just as far.
    let mut relay_only = idle.clone();
    relay_only.relay_enabled = true;
    let relay = h.start("relay-only", relay_only).await;
    eventually(Duration::from_secs(10), "the relay to publish", || async {
        let (unpublished, _) = read_model::lag::relay(&h.pool).await.unwrap();
        (unpublished == 0).then_some(())
    })
    .await;
    lagging().await;
    // That count comes from the relay's per-shard counts without reading the events; a scan
    // of them (what the lag falls back to for heads not counted yet) finds the same.
    let counted = read_model::lag::of_active(&h.pool, &h.pool, idle.shards)
        .await
        .unwrap();
    assert_eq!(counted.events(), n as i64);
    sqlx::query("UPDATE relay_shard_heads SET published = NULL")
        .execute(&h.pool)
        .await
        .unwrap();
    let scanned = read_model::lag::of_active(&h.pool, &h.pool, idle.shards)
        .await
        .unwrap();
    let counts = |lag: &read_model::Lag| lag.shards.iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(counts(&scanned), counts(&counted));
    // The counted path dates a shard by its first event in commit-safe order, the scan by
    // the least commit time: they differ at most by how long a transaction ran.
    let (a, b) = (counted.oldest().unwrap(), scanned.oldest().unwrap());
    assert!((a - b).num_milliseconds().abs() < 1_000, "{a} vs {b}");

    // A replica with consumers catches up: every replica answers 200 again.
    let mut projecting = idle.clone();
    projecting.projector_enabled = true;
    let consumer = h.start("projecting", projecting).await;
    h.wait_projected(1, Duration::from_secs(30)).await;
    for app in [&app, &relay, &consumer] {
        eventually(
            Duration::from_secs(10),
            "readiness after catching up",
            || async {
                let (status, report) = ready(&client, app).await;
                (status == 200 && report.checks["projector_lag"] == "ok").then_some(())
            },
        )
        .await;
    }
    consumer.stop().await;
    relay.stop().await;
    app.stop().await;
}
