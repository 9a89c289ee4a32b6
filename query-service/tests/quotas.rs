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

/// A query service whose tenants may compute one statistics query at a time and send
/// `rps` requests a second (burst the same), with every other quota generous.
async fn service(db: &TestDb, rps: u32) -> RunningApp {
    let mut settings = test_support::settings(&db.url);
    settings.quota = Limits {
        requests_per_second: rps,
        request_burst: rps,
        concurrent_requests: 100,
        batch_events_per_second: 1_000,
        batch_event_burst: 1_000,
        concurrent_batches: 1,
        concurrent_queries: 1,
        query_cost_per_second: 1_000_000,
        query_cost_burst: 1_000_000,
    };
    RunningApp::spawn(query_service::build(settings).await.expect("starts"))
}

#[tokio::test]
async fn a_tenant_computing_its_one_query_is_refused_a_second_and_its_neighbour_is_not() {
    let db = TestDb::migrated().await;
    let app = service(&db, 1_000).await;
    let keys = ApiKeys::new(db.pool().await);
    let (_, key) = keys.create_tenant("slow-dashboards").await.unwrap();
    let (_, other) = keys.create_tenant("neighbour").await.unwrap();
    let client = reqwest::Client::new();
    let get = |key: &str, q: String| {
        client
            .get(app.url(&format!("/v1/stats/messages?{q}")))
            .bearer_auth(key)
            .send()
    };
    let month = range("2026-10-01T00:00:00Z", "2026-10-31T00:00:00Z");
    // A token no write will ever reach: the query holds its slot for the whole wait.
    let waiting = format!(
        "{month}&bucket=day&consistency_token={}.5&wait_ms=3000",
        uuid::Uuid::new_v4().simple()
    );
    let first = get(&key, waiting.clone());
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mine = get(&key, format!("{month}&bucket=day")).await.unwrap();
        let theirs = get(&other, waiting.clone()).await.unwrap();
        (mine, theirs)
    };
    let (first, (mine, theirs)) = tokio::join!(first, second);
    let first = first.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["freshness"]["consistent"], false, "{first}");
    assert_eq!(mine.status().as_u16(), 429);
    assert_eq!(mine.headers()["retry-after"], "1");
    let body: Value = mine.json().await.unwrap();
    assert_eq!(
        body["error"]["limit"]["name"], "concurrent_queries",
        "{body}"
    );
    assert_eq!(body["error"]["limit"]["value"], 1, "{body}");
    // The neighbour's one query ran while the first tenant's held its own slot.
    assert_eq!(theirs.status().as_u16(), 200);
    // With its slot free again, the tenant's next query runs.
    let after = get(&key, format!("{month}&bucket=day")).await.unwrap();
    assert_eq!(after.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_flooding_the_query_service_is_refused_and_its_neighbour_is_not() {
    use futures::StreamExt;
    use std::time::{Duration, Instant};
    let db = TestDb::migrated().await;
    let app = service(&db, 20).await;
    let keys = ApiKeys::new(db.pool().await);
    let (_, noisy) = keys.create_tenant("noisy").await.unwrap();
    let (_, steady) = keys.create_tenant("steady").await.unwrap();
    let client = reqwest::Client::new();
    let list = |key: String| {
        let request = client
            .get(app.url("/v1/messages?limit=10"))
            .bearer_auth(key)
            .send();
        async move {
            let r = request.await.unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().contains_key("retry-after");
            (status, retry)
        }
    };
    // 200 requests a second for 2 s: ten times the quota of 20. The steady tenant sends 10
    // a second meanwhile.
    let started = Instant::now();
    let flood = futures::stream::iter(0..400u64)
        .map(|i| {
            let list = &list;
            let key = noisy.clone();
            async move {
                tokio::time::sleep_until((started + Duration::from_millis(i * 5)).into()).await;
                list(key).await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>();
    let calm = async {
        let mut out = Vec::new();
        for i in 0..20u64 {
            tokio::time::sleep_until((started + Duration::from_millis(i * 100)).into()).await;
            out.push(list(steady.clone()).await);
        }
        out
    };
    let (flood, calm) = tokio::join!(flood, calm);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(calm.iter().all(|(s, _)| *s == 200), "{calm:?}");
    let accepted = flood.iter().filter(|(s, _)| *s == 200).count();
    assert!(
        flood
            .iter()
            .all(|(s, retry)| *s == 200 || (*s == 429 && *retry)),
        "the noisy tenant got something other than 200 or 429 with Retry-After"
    );
    let most = 20.0 + 20.0 * elapsed + 1.0;
    assert!(
        accepted >= 20 && accepted as f64 <= most,
        "{accepted} accepted in {elapsed:.1} s; the quota allows at most {most:.0}"
    );
}
