//! Metrics: `/metrics` parsed as Prometheus text, counters moving by exactly what known
//! requests should move them, and the registry pushed to a real Pushgateway (Debian's
//! `prometheus-pushgateway`, one per test on its own port) and deleted on clean shutdown.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{email, observation, TestApp};
use test_support::prom_text::{self, Exposition};
use test_support::pushgateway::Pushgateway;

async fn scrape(t: &TestApp) -> Exposition {
    let response = t.client.get(t.app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    prom_text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// How much each `(name, labels)` moved between two scrapes.
fn delta(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[tokio::test]
async fn counters_move_by_exactly_the_known_requests() {
    let t = TestApp::spawn().await;
    let before = scrape(&t).await;
    let events_before = t.event_count().await;

    // 3 plain submits: accepted.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            t.submit(&email()).await["message_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // An invalid recipient: rejected by the domain (400).
    let mut bad = email();
    bad["recipient"] = json!("not-an-address");
    let r = t.post("/v1/messages").json(&bad).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // A keyed submit (accepted), its replay (unchanged), the key with another body (conflict).
    let keyed = |body: serde_json::Value| {
        t.post("/v1/messages")
            .header("idempotency-key", "metrics-key")
            .json(&body)
            .send()
    };
    assert_eq!(keyed(email()).await.unwrap().status().as_u16(), 202);
    assert_eq!(keyed(email()).await.unwrap().status().as_u16(), 202);
    let mut other = email();
    other["recipient"] = json!("grace@example.com");
    assert_eq!(keyed(other).await.unwrap().status().as_u16(), 409);
    // An observation (accepted), its duplicate (unchanged).
    let id = &ids[0];
    assert_eq!(
        t.observe(id, &observation("dispatched", "d1"))
            .await
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        t.observe(id, &observation("dispatched", "d1"))
            .await
            .status()
            .as_u16(),
        202
    );
    // Cancel after dispatch: a lifecycle rule refuses it (422).
    let r = t
        .post(&format!("/v1/messages/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    // Cancel of a queued message: accepted.
    let r = t
        .post(&format!("/v1/messages/{}/cancel", ids[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // No route: counted under "unmatched", never the raw path.
    let r = t.get("/no/such/route/12345").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let after = scrape(&t).await;
    let appended = t.event_count().await - events_before;
    let commands = |kind, outcome| {
        delta(
            &before,
            &after,
            "herald_commands_total",
            &[("kind", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(commands("submit", "accepted"), 4.0);
    assert_eq!(commands("submit", "unchanged"), 1.0);
    assert_eq!(commands("submit", "rejected"), 1.0);
    assert_eq!(commands("submit", "conflict"), 1.0);
    assert_eq!(commands("submit", "error"), 0.0);
    assert_eq!(commands("observe", "accepted"), 1.0);
    assert_eq!(commands("observe", "unchanged"), 1.0);
    assert_eq!(commands("cancel", "rejected"), 1.0);
    assert_eq!(commands("cancel", "accepted"), 1.0);
    assert_eq!(
        delta(&before, &after, "herald_commands_total", &[]),
        11.0,
        "no other command was counted"
    );
    // Events: 4 submits, 1 observation, 1 cancel; the store agrees.
    assert_eq!(appended, 6);
    assert_eq!(
        delta(&before, &after, "herald_events_appended_total", &[]),
        appended as f64
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "herald_command_duration_seconds_count",
            &[("kind", "submit")]
        ),
        7.0
    );
    assert_eq!(after.type_of("herald_commands_total"), Some("counter"));
    assert_eq!(
        after.type_of("herald_command_duration_seconds"),
        Some("histogram")
    );

    let http = |route, status| {
        delta(
            &before,
            &after,
            "herald_http_requests_total",
            &[("route", route), ("method", "POST"), ("status", status)],
        )
    };
    assert_eq!(http("/v1/messages", "202"), 5.0);
    assert_eq!(http("/v1/messages", "400"), 1.0);
    assert_eq!(http("/v1/messages", "409"), 1.0);
    assert_eq!(http("/v1/messages/{id}/observations", "202"), 2.0);
    assert_eq!(http("/v1/messages/{id}/cancel", "422"), 1.0);
    assert_eq!(http("/v1/messages/{id}/cancel", "202"), 1.0);
    assert_eq!(
        delta(
            &before,
            &after,
            "herald_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "herald_http_request_duration_seconds_count",
            &[("route", "/v1/messages"), ("method", "POST")]
        ),
        7.0
    );
    // Every sample carries the service; no label holds an id.
    for s in &after.samples {
        assert_eq!(
            s.labels.get("service").map(String::as_str),
            Some("command-service"),
            "{s:?}"
        );
        for value in s.labels.values() {
            assert!(!value.contains(id.as_str()), "an id leaked into {s:?}");
            assert!(!value.contains(&t.tenant.to_string()), "{s:?}");
        }
    }
}

#[tokio::test]
async fn metrics_reach_the_pushgateway_under_job_and_instance_and_leave_on_shutdown() {
    let gateway = Pushgateway::start().await;
    let mut instance = String::new();
    let t = TestApp::spawn_with(|s| {
        s.pushgateway_url = Some(gateway.url.clone());
        s.push_interval = Duration::from_millis(200);
        instance = s.instance_id.clone();
    })
    .await;
    t.submit(&email()).await;

    // Within a few intervals, the gateway shows the service's metrics under its group.
    let started = Instant::now();
    let pushed = loop {
        let text = gateway.metrics_text().await;
        let parsed = prom_text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let group = [("job", "command-service"), ("instance", instance.as_str())];
        let accepted: Vec<(&str, &str)> = group
            .iter()
            .copied()
            .chain([("kind", "submit"), ("outcome", "accepted")])
            .collect();
        if parsed.sum("herald_commands_total", &accepted) == 1.0 {
            break parsed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not pushed in time:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let group = [("job", "command-service"), ("instance", instance.as_str())];
    assert!(
        pushed
            .matching("herald_http_requests_total", &group)
            .any(|s| s.labels["route"] == "/v1/messages" && s.labels["status"] == "202"),
        "HTTP metrics are pushed too"
    );
    assert!(gateway.groups().await.iter().any(|g| {
        g.get("job").map(String::as_str) == Some("command-service")
            && g.get("instance") == Some(&instance)
    }));

    // The start-up's migration run pushed a group of its own, which stays.
    let migrate_group = |groups: &[std::collections::BTreeMap<String, String>]| {
        groups.iter().any(|g| {
            g.get("job").map(String::as_str) == Some("herald-migrate")
                && g.get("instance") == Some(&instance)
        })
    };
    assert!(migrate_group(&gateway.groups().await));
    // Clean shutdown deletes the service's group.
    t.app.stop().await;
    let groups = gateway.groups().await;
    assert!(
        !groups.iter().any(|g| g.get("instance") == Some(&instance)
            && g.get("job").map(String::as_str) == Some("command-service")),
        "group still there after shutdown: {groups:?}"
    );
    assert!(
        migrate_group(&groups),
        "the migration run's group stays: {groups:?}"
    );
    let text = gateway.metrics_text().await;
    let parsed = prom_text::parse(&text).unwrap();
    assert_eq!(
        parsed
            .matching("herald_commands_total", &[("instance", instance.as_str())])
            .count(),
        0,
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_pushgateway_neither_blocks_nor_fails_the_service() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = TestApp::spawn_with(|s| {
        s.pushgateway_url = Some(format!("http://127.0.0.1:{port}"));
        s.push_interval = Duration::from_millis(50);
    })
    .await;
    for _ in 0..3 {
        t.submit(&email()).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let parsed = scrape(&t).await;
    assert_eq!(
        parsed.sum(
            "herald_commands_total",
            &[("kind", "submit"), ("outcome", "accepted")]
        ),
        3.0
    );
    let started = Instant::now();
    t.app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "shutdown waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_instance_id_with_a_slash_is_one_group_in_base64_form() {
    let gateway = Pushgateway::start().await;
    let instance = format!("pod/{}", uuid::Uuid::new_v4().simple());
    let t = TestApp::spawn_with(|s| {
        s.pushgateway_url = Some(gateway.url.clone());
        s.push_interval = Duration::from_millis(100);
        s.instance_id = instance.clone();
    })
    .await;
    let started = Instant::now();
    loop {
        let groups = gateway.groups().await;
        if groups.iter().any(|g| {
            g.get("instance") == Some(&instance)
                && g.get("job").map(String::as_str) == Some("command-service")
        }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no group for {instance}: {groups:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.app.stop().await;
    assert!(!gateway.groups().await.iter().any(|g| {
        g.get("instance") == Some(&instance)
            && g.get("job").map(String::as_str) == Some("command-service")
    }));
}
