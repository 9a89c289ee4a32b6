//! Fair share: a tenant over its quota is refused with 429 before it costs anything shared,
//! and a tenant within its own is untouched by it.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use service_kit::auth::ApiKeys;
use service_kit::quota::{Limits, Overrides};
use support::{email, TestApp};
use uuid::Uuid;

/// Every tenant's defaults in these tests: generous for the steady tenant.
fn defaults() -> Limits {
    Limits {
        requests_per_second: 50,
        request_burst: 50,
        concurrent_requests: 16,
        batch_events_per_second: 100,
        batch_event_burst: 150,
        concurrent_batches: 2,
        concurrent_queries: 2,
        query_cost_per_second: 1_000,
        query_cost_burst: 1_000,
    }
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(|s| s.quota = defaults()).await
}

/// A tenant with its own quota, set before its first request (so no cached key hides it).
async fn tenant_with(app: &TestApp, own: Overrides) -> (Uuid, String) {
    let keys = ApiKeys::new(app.pool.clone());
    let (tenant, key) = keys
        .create_tenant(&format!("noisy-{}", Uuid::new_v4()))
        .await
        .unwrap();
    keys.set_quota(tenant.id, &own).await.unwrap();
    (tenant.id, key)
}

/// Status, `Retry-After` and JSON body of one submit.
async fn submit(app: &TestApp, key: &str) -> (u16, Option<u64>, Value) {
    let response = app
        .client
        .post(app.app.url("/v1/messages"))
        .bearer_auth(key)
        .json(&email())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

async fn messages(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT aggregate_id) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_flooding_at_ten_times_its_quota_is_refused_and_its_neighbour_is_not() {
    let app = spawn().await;
    let (_, noisy) = tenant_with(
        &app,
        Overrides {
            requests_per_second: Some(10),
            request_burst: Some(10),
            ..Overrides::default()
        },
    )
    .await;
    let steady = app.key.clone();

    // The noisy tenant sends 100 requests per second for 3 s (ten times its quota) while
    // the steady one sends 10 per second, within its own.
    let started = Instant::now();
    let flood = futures::stream::iter(0..300u64)
        .map(|i| {
            let (app, key) = (&app, &noisy);
            async move {
                tokio::time::sleep_until((started + Duration::from_millis(i * 10)).into()).await;
                submit(app, key).await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>();
    let calm = async {
        let mut out = Vec::new();
        for i in 0..30u64 {
            tokio::time::sleep_until((started + Duration::from_millis(i * 100)).into()).await;
            out.push(submit(&app, &steady).await);
        }
        out
    };
    let (flood, calm) = tokio::join!(flood, calm);
    let elapsed = started.elapsed().as_secs_f64();

    for (status, _, body) in &calm {
        assert_eq!(*status, 202, "the steady tenant was refused: {body}");
    }
    let accepted = flood.iter().filter(|(s, _, _)| *s == 202).count();
    let mut refused_by_rate = 0;
    for (status, retry, body) in &flood {
        match status {
            202 => {}
            429 => {
                assert!(
                    retry.is_some_and(|r| r >= 1),
                    "429 without Retry-After: {body}"
                );
                assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
                let limit = &body["error"]["limit"];
                match limit["name"].as_str() {
                    Some("requests_per_second") => {
                        refused_by_rate += 1;
                        assert_eq!(
                            (limit["value"].as_u64(), limit["burst"].as_u64()),
                            (Some(10), Some(10)),
                            "{body}"
                        );
                    }
                    Some("concurrent_requests") => assert_eq!(limit["value"], 16, "{body}"),
                    _ => panic!("an unexpected limit: {body}"),
                }
            }
            other => panic!("the noisy tenant got {other}, not 202 or 429: {body}"),
        }
    }
    // GCRA lets through the burst and then the rate, never more.
    let most = 10.0 + 10.0 * elapsed + 1.0;
    assert!(
        accepted >= 10 && accepted as f64 <= most,
        "{accepted} accepted in {elapsed:.1} s; the quota allows at most {most:.0}"
    );
    assert!(refused_by_rate > 0);
    // A refused command wrote nothing: exactly the accepted messages exist.
    assert_eq!(messages(&app).await, (accepted + calm.len()) as i64);

    let metrics = app
        .client
        .get(app.app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = test_support::prom_text::parse(&metrics).unwrap();
    assert_eq!(
        metrics.sum(
            "herald_quota_refusals_total",
            &[
                ("limit", "requests_per_second"),
                ("service", "command-service")
            ]
        ),
        refused_by_rate as f64
    );
    let refused_for = metrics.sum("herald_quota_refused_for_seconds", &[]);
    assert!(
        refused_for > 0.5,
        "refused for {refused_for} s after a 3 s flood"
    );
}

fn batch(n: usize) -> Value {
    json!({"commands": (0..n).map(|_| json!({"op": "submit", "message": email()})).collect::<Vec<_>>()})
}

#[tokio::test]
async fn a_batch_over_the_tenant_batch_rate_is_refused_whole() {
    let app = spawn().await;
    let post = |n: usize| {
        app.client
            .post(app.app.url("/v1/batch"))
            .bearer_auth(&app.key)
            .json(&batch(n))
            .send()
    };
    let first = post(100).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["accepted"], 100, "{first}");
    let before = messages(&app).await;

    // 50 of the burst of 150 are left: 100 more do not fit, and none of them runs.
    let second = post(100).await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert_eq!(
        body["error"]["limit"]["name"], "batch_events_per_second",
        "{body}"
    );
    assert_eq!(
        messages(&app).await,
        before,
        "a refused batch wrote commands"
    );

    // A batch larger than the whole burst could never pass: 413, and it says why.
    let huge = post(151).await.unwrap();
    assert_eq!(huge.status().as_u16(), 413);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "batch_over_quota", "{body}");
    assert_eq!(body["error"]["field"], "commands", "{body}");
    assert_eq!(messages(&app).await, before);

    // Another tenant's batches have their own budget.
    let other = app.other_tenant_key().await;
    let theirs = app
        .client
        .post(app.app.url("/v1/batch"))
        .bearer_auth(&other)
        .json(&batch(100))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status().as_u16(), 200);
}

#[tokio::test]
async fn the_quota_command_sets_one_tenants_quota_and_leaves_the_others_on_the_defaults() {
    let app = spawn().await;
    let keys = ApiKeys::new(app.pool.clone());
    let (tenant, key) = keys
        .create_tenant(&format!("limited-{}", Uuid::new_v4()))
        .await
        .unwrap();
    let mut settings = test_support::settings(&app.db.url);
    settings.quota = defaults();
    let command = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let settings = settings.clone();
        async move { service_kit::auth::tenant_command(&args, &settings).await }
    };
    let id = tenant.id.to_string();
    command(&[
        "tenant",
        "quota",
        &id,
        "requests_per_second=1",
        "request_burst=2",
    ])
    .await
    .unwrap();
    let own = keys.quota_of(tenant.id).await.unwrap().unwrap();
    assert_eq!(
        (own.requests_per_second, own.request_burst),
        (Some(1), Some(2))
    );
    assert!(command(&["tenant", "quota", &id, "request_burst=0"])
        .await
        .is_err());
    assert!(command(&["tenant", "quota", &id, "speed=9"]).await.is_err());
    assert!(command(&["tenant", "quota", &Uuid::new_v4().to_string()])
        .await
        .is_err());

    // A burst of 2 then 1 a second: of 7 requests in a row, the first two pass and some
    // of the rest are refused (all of them unless the machine takes seconds over them).
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(submit(&app, &key).await.0);
    }
    assert_eq!(statuses[..2], [202, 202], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [202, 429].contains(s)),
        "{statuses:?}"
    );
    // The default tenant is not held to that quota.
    for _ in 0..5 {
        assert_eq!(submit(&app, &app.key).await.0, 202);
    }

    // `reset` goes back to the defaults: no row is left.
    command(&["tenant", "quota", &id, "reset"]).await.unwrap();
    assert_eq!(
        keys.quota_of(tenant.id).await.unwrap(),
        Some(Overrides::default())
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_quotas")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}
