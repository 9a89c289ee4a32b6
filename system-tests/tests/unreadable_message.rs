//! A message whose stored event cannot be decoded (written behind Herald's back: Herald
//! itself refuses such values at the edge) breaks nothing but itself: its owner gets a
//! clear error naming it, everyone else a 404, the projector parks the event, and the
//! owner's freshness says an event is missing for as long as it is.

use std::time::Duration;

use serde_json::{json, Value};
use system_tests::{bins, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_stored_event_answers_its_owner_clearly_and_nobody_else_notices() {
    let sys = System::start(bins!(), &[("HERALD_PROJECTOR_MAX_FAILURES", "2")]).await;
    let (owner, owner_key) = sys.tenant("owner").await;
    let (_, other_key) = sys.tenant("other").await;
    let submit = |key: String| {
        let client = sys.client.clone();
        let url = sys.command.url("/v1/messages");
        async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(
                    &json!({"channel": "push", "recipient": "fcm:abc", "provider": "fcm",
                              "content": {"type": "inline", "body": "hi"}}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            r.json::<Value>().await.unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let broken = submit(owner_key.clone()).await;
    let fine = submit(owner_key.clone()).await;
    let theirs = submit(other_key.clone()).await;
    sys.settle(Duration::from_secs(30)).await;

    // jsonb keeps 200 levels of nesting; serde_json reads at most 128.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Message', $1, 2, 'MessageDispatched', '1', $2::jsonb, $3::jsonb)",
    )
    .bind(&broken)
    .bind(format!(r#"{{"MessageDispatched": {{"details": {deep}}}}}"#))
    .bind(json!({"tenant_id": owner.to_string()}).to_string())
    .execute(&sys.pool)
    .await
    .unwrap();

    let observe = |id: &str, key: &str| {
        sys.client
            .post(sys.command.url(&format!("/v1/messages/{id}/observations")))
            .bearer_auth(key)
            .json(
                &json!({"kind": "delivered", "dedupe_key": format!("d-{id}"),
                          "occurred_at": chrono::Utc::now().to_rfc3339()}),
            )
            .send()
    };
    let r = observe(&broken, &owner_key)
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(r.status().as_u16(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "message_unreadable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&broken) && message.contains("event 2"),
        "{message}"
    );

    let cancel = sys
        .client
        .post(sys.command.url(&format!("/v1/messages/{broken}/cancel")))
        .bearer_auth(&other_key)
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(cancel.status().as_u16(), 404);
    assert_eq!(
        cancel.json::<Value>().await.unwrap()["error"]["code"],
        "message_not_found"
    );
    for (id, key) in [(&fine, &owner_key), (&theirs, &other_key)] {
        assert_eq!(observe(id, key).await.unwrap().status().as_u16(), 202);
    }

    // The projector parks the event; only the owner's freshness reports it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let parked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dead_letters WHERE state = 'parked' AND message_id = $1",
        )
        .bind(&broken)
        .fetch_one(&sys.pool)
        .await
        .unwrap();
        if parked == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let freshness = |key: String| {
        let client = sys.client.clone();
        let url = sys.query.url("/v1/stats/messages");
        async move {
            let body: Value = client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["freshness"].clone()
        }
    };
    let mine = freshness(owner_key.clone()).await;
    assert_eq!(mine["parked_events"], 1, "{mine}");
    assert!(mine["lag_events"].as_i64().unwrap() >= 1, "{mine}");
    assert!(mine["lag_seconds"].as_f64().unwrap() > 0.0, "{mine}");
    let others = freshness(other_key.clone()).await;
    assert_eq!(others["parked_events"], 0, "{others}");

    let metrics = sys
        .client
        .get(sys.command.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_http_panics_total{service=\"command-service\"} 0"),
        "{metrics}"
    );
    sys.assert_verified().await;
    sys.assert_no_panics();
}
