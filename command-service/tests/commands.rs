//! The command API against a real event store.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use support::{email, observation, TestApp};

#[tokio::test]
async fn submit_stores_the_event_with_its_metadata() {
    let t = TestApp::spawn().await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = t
        .post("/v1/messages")
        .header("x-request-id", "req-42")
        .header("traceparent", parent)
        .json(&email())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let answer: Value = response.json().await.unwrap();
    let id = answer["message_id"].as_str().unwrap().to_string();
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["sequence"], 1);
    assert_eq!(answer["changed"], true);
    assert_eq!(
        answer["consistency_token"],
        format!("{}.1", uuid::Uuid::parse_str(&id).unwrap().simple())
    );

    let stream = t.stream(&id).await;
    assert_eq!(stream.len(), 1);
    let (sequence, event_type, payload, metadata) = &stream[0];
    assert_eq!(*sequence, 1);
    assert_eq!(event_type, "MessageSubmitted");
    assert_eq!(
        payload["MessageSubmitted"]["tenant_id"],
        t.tenant.to_string()
    );
    assert_eq!(payload["MessageSubmitted"]["recipient"], "ada@example.com");
    assert_eq!(metadata["correlation_id"], "req-42");
    assert_eq!(metadata["tenant_id"], t.tenant.to_string());
    let traceparent = metadata["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert_ne!(
        traceparent, parent,
        "the command gets its own span in the caller's trace"
    );
    uuid::Uuid::parse_str(metadata["causation_id"].as_str().unwrap())
        .expect("causation id is a UUID");
    let received =
        chrono::DateTime::parse_from_rfc3339(metadata["received_at"].as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - received.to_utc()).num_seconds().abs() < 60);

    // Without X-Request-Id, one is generated and echoed.
    let response = t.post("/v1/messages").json(&email()).send().await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let id: Value = response.json().await.unwrap();
    let stream = t.stream(id["message_id"].as_str().unwrap()).await;
    assert_eq!(stream[0].3["correlation_id"], generated);
}

#[tokio::test]
async fn idempotency_key_gives_one_message_and_refuses_another_body() {
    let t = TestApp::spawn().await;
    let send = |body: Value, key: &'static str| {
        t.post("/v1/messages")
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send(email(), "order-1").await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The same body with its keys in another order is the same request.
    let mut reordered = serde_json::Map::new();
    for (k, v) in email().as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), v.clone());
    }
    let again = send(Value::Object(reordered), "order-1").await.unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["message_id"], first["message_id"]);
    assert_eq!(again["sequence"], first["sequence"]);
    assert_eq!(again["consistency_token"], first["consistency_token"]);
    assert_eq!(t.event_count().await, 1);

    let mut other = email();
    other["recipient"] = json!("grace@example.com");
    let conflict = send(other, "order-1").await.unwrap();
    assert_eq!(conflict.status().as_u16(), 409);
    let body: Value = conflict.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(t.event_count().await, 1);

    // The same key from another tenant is another message.
    let other_key = t.other_tenant_key().await;
    let theirs: Value = t
        .client
        .post(t.app.url("/v1/messages"))
        .bearer_auth(other_key)
        .header("idempotency-key", "order-1")
        .json(&email())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(theirs["message_id"], first["message_id"]);
    assert_eq!(t.event_count().await, 2);

    // Concurrent first submissions with one key still make one message.
    let racers = (0..8).map(|_| send(email(), "order-2"));
    let answers = futures::future::join_all(racers).await;
    let ids: BTreeSet<String> = futures::future::join_all(answers.into_iter().map(|r| async {
        let r = r.unwrap();
        assert_eq!(r.status().as_u16(), 202);
        r.json::<Value>().await.unwrap()["message_id"]
            .as_str()
            .unwrap()
            .to_string()
    }))
    .await
    .into_iter()
    .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(t.stream(ids.iter().next().unwrap()).await.len(), 1);
}

#[tokio::test]
async fn two_hundred_concurrent_observations_are_each_applied_once_or_refused() {
    let t = TestApp::spawn().await;
    let id = t.submit(&email()).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let kinds = [
        "deferred",
        "delivered",
        "opened",
        "clicked",
        "complained",
        "unsubscribed",
    ];
    let observations: Vec<(String, Value)> = (0..200)
        .map(|i| {
            let key = format!("evt-{i}");
            (key.clone(), observation(kinds[i % kinds.len()], &key))
        })
        .collect();
    let sends = observations.iter().map(|(key, body)| {
        let t = &t;
        let id = &id;
        async move {
            let response = t.observe(id, body).await;
            let status = response.status().as_u16();
            (key.clone(), status, response.json::<Value>().await.unwrap())
        }
    });
    let results = futures::future::join_all(sends).await;

    let mut applied = BTreeSet::new();
    let mut refused = Vec::new();
    for (key, status, body) in &results {
        match status {
            202 => {
                assert_eq!(body["changed"], true, "{key}: every key is new");
                applied.insert(key.clone());
            }
            409 => {
                assert_eq!(body["error"]["code"], "concurrent_modification", "{body}");
                refused.push(key.clone());
            }
            other => panic!("{key}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(applied.len() + refused.len(), 200);

    let check_stream = |stream: &[(i64, String, Value, Value)]| {
        // No gaps: sequences are exactly 1..=n.
        let sequences: Vec<i64> = stream.iter().map(|e| e.0).collect();
        assert_eq!(sequences, (1..=stream.len() as i64).collect::<Vec<_>>());
        // Each dedupe key was recorded by exactly one command (one causation id).
        let mut causes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, _, payload, metadata) in stream.iter().skip(1) {
            let inner = payload.as_object().unwrap().values().next().unwrap();
            let key = inner["dedupe_key"].as_str().unwrap().to_string();
            causes
                .entry(key)
                .or_default()
                .insert(metadata["causation_id"].as_str().unwrap().to_string());
        }
        assert!(
            causes.values().all(|c| c.len() == 1),
            "a key recorded twice"
        );
        causes.into_keys().collect::<BTreeSet<_>>()
    };
    let stream = t.stream(&id).await;
    assert_eq!(
        check_stream(&stream),
        applied,
        "the stream holds exactly the applied reports"
    );

    // Refused reports were cleanly refused: sent again, one by one, they apply.
    for key in &refused {
        let body = &observations.iter().find(|(k, _)| k == key).unwrap().1;
        let response = t.observe(&id, body).await;
        assert_eq!(response.status().as_u16(), 202);
    }
    let stream = t.stream(&id).await;
    assert_eq!(check_stream(&stream).len(), 200);

    // The state the service answers with equals a replay of the stored stream.
    let events: Vec<domain::MessageEvent> = stream
        .iter()
        .map(|e| serde_json::from_value(e.2.clone()).unwrap())
        .collect();
    let replayed = domain::replay(events);
    let duplicate = t.observe(&id, &observations[0].1).await;
    let answer: Value = duplicate.json().await.unwrap();
    assert_eq!(answer["changed"], false);
    assert_eq!(answer["sequence"], stream.len());
    assert_eq!(answer["status"], replayed.status().to_string());
    assert_eq!(replayed.status(), domain::MessageStatus::Delivered);
}

#[tokio::test]
async fn observations_and_cancel_follow_the_lifecycle() {
    let t = TestApp::spawn().await;
    let id = t.submit(&email()).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let dispatched: Value = t
        .observe(&id, &observation("dispatched", "d1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dispatched["status"], "dispatched");
    assert_eq!(dispatched["sequence"], 2);
    let repeat: Value = t
        .observe(&id, &observation("dispatched", "d1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(repeat["changed"], false);
    assert_eq!(repeat["sequence"], 2);

    let cancel = t
        .post(&format!("/v1/messages/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 422);
    let body: Value = cancel.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cancel_after_dispatch");

    let other = t.submit(&email()).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = t
        .post(&format!("/v1/messages/{other}/cancel"))
        .json(&json!({"reason": "customer asked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 202);
    let body: Value = cancel.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    let stream = t.stream(&other).await;
    assert_eq!(stream.last().unwrap().1, "MessageCancelled");
}

#[tokio::test]
async fn batch_runs_every_command_and_answers_each() {
    let t = TestApp::spawn().await;
    let existing = t.submit(&email()).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut commands = vec![
        json!({"op": "submit", "idempotency_key": "b-1", "message": email()}),
        json!({"op": "observe", "message_id": existing, "observation": observation("dispatched", "x1")}),
        json!({"op": "observe", "message_id": existing, "observation": observation("delivered", "x2")}),
        json!({"op": "submit", "message": {"channel": "fax"}}),
        json!({"op": "teleport"}),
        json!({"op": "cancel", "message_id": uuid::Uuid::new_v4()}),
    ];
    for i in 0..50 {
        let mut m = email();
        m["tags"] = json!([format!("bulk-{i}")]);
        commands.push(json!({"op": "submit", "message": m}));
    }
    let response = t
        .post("/v1/batch")
        .json(&json!({"commands": commands}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 56);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
    }
    assert_eq!(results[0]["status"], 202);
    assert_eq!(results[1]["status"], 202);
    assert_eq!(results[1]["result"]["sequence"], 2);
    assert_eq!(
        results[2]["result"]["sequence"], 3,
        "commands on one message run in order"
    );
    assert_eq!(results[2]["result"]["status"], "delivered");
    assert_eq!(results[3]["status"], 400);
    assert_eq!(results[4]["status"], 400);
    assert_eq!(results[5]["status"], 404);
    assert_eq!(answer["accepted"], 53);
    assert_eq!(answer["failed"], 3);
    assert_eq!(t.event_count().await, 1 + 1 + 2 + 50);

    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"op": "submit", "message": email()}))
        .collect();
    let response = t
        .post("/v1/batch")
        .json(&json!({"commands": too_many}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "commands");
    assert_eq!(t.event_count().await, 54);
}

#[tokio::test]
async fn tenant_command_prints_a_working_key_once() {
    let t = TestApp::spawn().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_command-service"))
        .args(["tenant", "create", "acme-cli"])
        .env("HERALD_DATABASE_URL", &t.db.url)
        .env("HERALD_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key="))
        .expect("the key is printed")
        .to_string();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE key_prefix = $1")
        .bind(&key[..13])
        .fetch_one(&t.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let response = t
        .client
        .post(t.app.url("/v1/messages"))
        .bearer_auth(&key)
        .json(&email())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    let again = std::process::Command::new(env!("CARGO_BIN_EXE_command-service"))
        .args(["tenant", "create", "acme-cli"])
        .env("HERALD_DATABASE_URL", &t.db.url)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a taken name is refused");
}
