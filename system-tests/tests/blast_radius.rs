//! One tenant's bad commands cannot fail another tenant's good ones: both are sent at once,
//! interleaved, through the running command service (whose group commit puts concurrent
//! commands into shared transactions), and every good command lands exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use system_tests::{bins, System};

/// Bad command bodies, each refused at the edge with a 400 of its own.
fn bad(i: usize) -> (String, String) {
    let submit = |content: &str| {
        format!(
            r#"{{"channel":"email","recipient":"a@b.co","provider":"ses","content":{content}}}"#
        )
    };
    let body = match i % 8 {
        0 => submit(r#"{"type":"inline","body":"nul \u0000 here"}"#),
        1 => submit(r#"{"type":"template","template_id":"t","variables":{"k\u0000":1}}"#),
        2 => submit(&format!(
            r#"{{"type":"template","template_id":"t","variables":{{"x":{}1{}}}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        )),
        3 => submit(r#"{"type":"template","template_id":"t","variables":{"a":1,"a":2}}"#),
        4 => submit(r#"{"type":"inline","body":"x"#),
        5 => "[1,2,3]".to_string(),
        6 => submit(r#"{"type":"template","template_id":"t","variables":{"x":1e999}}"#),
        _ => submit(r#"["inline", null, "x"]"#),
    };
    ("/v1/messages".to_string(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_commands_of_one_tenant_never_fail_good_ones_of_another() {
    let sys = System::start(bins!(), &[]).await;
    let (_, bad_key) = sys.tenant("noisy").await;
    let (good_tenant, good_key) = sys.tenant("innocent").await;
    const N: usize = 200;
    const M: usize = 600;

    // Interleave: every fourth request is bad.
    let mut requests: Vec<(bool, String, String)> = Vec::new();
    let (mut b, mut g) = (0, 0);
    while b < N || g < M {
        if b < N && (g >= M || requests.len().is_multiple_of(4)) {
            let (path, body) = bad(b);
            requests.push((false, path, body));
            b += 1;
        } else {
            let body = json!({"channel": "sms", "recipient": "+4915112345678", "provider": "twilio",
                              "content": {"type": "inline", "body": format!("good {g}")},
                              "tags": ["innocent"]});
            requests.push((true, "/v1/messages".into(), body.to_string()));
            g += 1;
        }
    }
    let client = sys.client.clone();
    let results: Vec<(bool, u16, Value)> = futures::stream::iter(requests)
        .map(|(good, path, body)| {
            let client = client.clone();
            let url = sys.command.url(&path);
            let key = if good {
                good_key.clone()
            } else {
                bad_key.clone()
            };
            async move {
                let r = client
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .expect("an answer, never a dropped connection");
                let status = r.status().as_u16();
                (
                    good,
                    status,
                    r.json::<Value>().await.expect("a JSON answer"),
                )
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    let mut ids = BTreeSet::new();
    for (good, status, body) in &results {
        if *good {
            assert_eq!(*status, 202, "a good command failed: {body}");
            ids.insert(body["message_id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(
                *status, 400,
                "bad commands are the client's mistake: {body}"
            );
            assert!(body["error"]["code"].is_string(), "{body}");
        }
    }
    assert_eq!(ids.len(), M, "every good command got its own message");

    // In the event store exactly once each, and nothing of the noisy tenant.
    let stored: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FROM events \
          WHERE aggregate_type = 'Message' AND event_type = 'MessageSubmitted' \
            AND metadata->>'tenant_id' = $1 GROUP BY aggregate_id",
    )
    .bind(good_tenant.to_string())
    .fetch_all(&sys.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), M);
    assert!(stored.iter().all(|(id, n)| *n == 1 && ids.contains(id)));
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    assert_eq!(total, M as i64, "no bad command wrote anything");

    // The group commit really was shared: the command service's own histogram saw
    // transactions with several commands.
    let metrics = sys
        .client
        .get(sys.command.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shared: f64 = metrics
        .lines()
        .find(|l| l.starts_with("herald_group_commit_commands_bucket") && l.contains("le=\"1\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("group size histogram");
    assert!(
        shared < M as f64,
        "some commands shared a transaction ({shared} of {M} went alone)"
    );
    sys.assert_ready().await;
    sys.assert_verified().await;
    sys.assert_no_panics();
}
