//! Statistics quotas: a tenant's queries at once and their cost, refused with 429 (or 400
//! for a query dearer than the whole budget) before anything is read.

use serde_json::Value;
use service_kit::auth::ApiKeys;
use service_kit::quota::Limits;
use test_support::pipeline::range;
use test_support::{RunningApp, TestDb};

#[tokio::test]
async fn statistics_are_charged_their_cost_and_one_over_the_budget_is_refused() {
    let db = TestDb::migrated().await;
    let mut settings = test_support::settings(&db.url);
    settings.quota = Limits {
        requests_per_second: 1_000,
        request_burst: 1_000,
        concurrent_requests: 100,
        batch_events_per_second: 1_000,
        batch_event_burst: 1_000,
        concurrent_batches: 1,
        concurrent_queries: 1,
        query_cost_per_second: 1,
        query_cost_burst: 1_000,
    };
    let app = RunningApp::spawn(query_service::build(settings).await.expect("starts"));
    let pool = db.pool().await;
    let keys = ApiKeys::new(pool.clone());
    let (_, key) = keys.create_tenant("dashboards").await.unwrap();
    let (_, other) = keys.create_tenant("neighbour").await.unwrap();
    let client = reqwest::Client::new();
    let get = |key: &str, q: &str| {
        client
            .get(app.url(&format!("/v1/stats/messages?{q}")))
            .bearer_auth(key)
            .send()
    };
    let month = range("2026-10-01T00:00:00Z", "2026-10-31T00:00:00Z");
    // 30 days of hours: 720 rows of one series, within the burst of 1,000.
    let hours = format!("{month}&bucket=hour");
    let first = get(&key, &hours).await.unwrap();
    assert_eq!(first.status().as_u16(), 200, "{:?}", first.text().await);

    // 280 are left, refilling at 1 a second: the same query again is over the budget.
    let again = get(&key, &hours).await.unwrap();
    assert_eq!(again.status().as_u16(), 429);
    let retry: u64 = again.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry >= 400,
        "retry after {retry} s, but 440 units are missing at 1 a second"
    );
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(
        body["error"]["limit"]["name"], "query_cost_per_second",
        "{body}"
    );
    assert_eq!(body["error"]["limit"]["burst"], 1_000, "{body}");

    // 30 days of 15 minutes by channel cost 2,880 × 4: more than the whole burst.
    let dear = format!("{month}&bucket=15m&group_by=channel");
    let refused = get(&key, &dear).await.unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "query_over_budget", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("costs 11520"),
        "{body}"
    );

    // The neighbour's budget is its own.
    let theirs = get(&other, &hours).await.unwrap();
    assert_eq!(theirs.status().as_u16(), 200);
}
