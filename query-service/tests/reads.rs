//! Message reads, tenant isolation, and the refusal of bad parameters.

use chrono::{DateTime, Duration, Utc};
use domain::{Channel, ObservationKind as K};
use serde_json::Value;
use test_support::events::{observe, submit};
use test_support::pipeline::{enc, range, Pipeline};
use uuid::Uuid;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn message_state_timeline_and_paginated_list() {
    let p = Pipeline::start().await;
    let tenant = Uuid::new_v4();
    let key = p.tenant(tenant).await;
    let t0 = utc("2026-11-02T10:00:00Z");
    let mut ids = Vec::new();
    for i in 0..7i64 {
        let id = Uuid::new_v4();
        let channel = if i % 2 == 0 {
            Channel::Email
        } else {
            Channel::Sms
        };
        let at = t0 + Duration::minutes(i);
        let recipient_tags = vec![format!("batch-{}", i % 3)];
        p.h.append(id, submit(id, tenant, at, channel, "ses", recipient_tags))
            .await;
        p.h.append(
            id,
            observe(K::Dispatched, &format!("{id}-d"), at + Duration::seconds(1)),
        )
        .await;
        if i < 4 {
            p.h.append(
                id,
                observe(K::Delivered, &format!("{id}-v"), at + Duration::seconds(3)),
            )
            .await;
        }
        ids.push(id);
    }
    p.settle().await;

    let (status, one) = p.get(&key, &format!("/v1/messages/{}", ids[0])).await;
    assert_eq!(status, 200, "{one}");
    let m = &one["message"];
    assert_eq!(m["status"], "delivered");
    assert_eq!(m["channel"], "email");
    assert_eq!(m["submitted_at"], "2026-11-02T10:00:00Z");
    assert_eq!(m["dispatched_at"], "2026-11-02T10:00:01Z");
    assert_eq!(m["delivered_at"], "2026-11-02T10:00:03Z");
    assert_eq!(m["latency_ms_from_submit"], 3000);
    assert_eq!(m["latency_ms_from_dispatch"], 2000);
    assert_eq!(m["last_sequence"], 3);
    assert_eq!(one["freshness"]["consistent"], Value::Null);

    let (status, timeline) = p
        .get(&key, &format!("/v1/messages/{}/events", ids[0]))
        .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["MessageSubmitted", "MessageDispatched", "MessageDelivered"]
    );

    // Pages of 3, newest first, no duplicates, no gaps.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let path = match &cursor {
            None => "/v1/messages?limit=3".to_string(),
            Some(c) => format!("/v1/messages?limit=3&cursor={c}"),
        };
        let (status, page) = p.get(&key, &path).await;
        assert_eq!(status, 200, "{page}");
        for m in page["messages"].as_array().unwrap() {
            seen.push(Uuid::parse_str(m["message_id"].as_str().unwrap()).unwrap());
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);

    let (_, delivered) = p
        .get(&key, "/v1/messages?status=delivered&channel=email")
        .await;
    assert_eq!(
        delivered["messages"].as_array().unwrap().len(),
        2,
        "{delivered}"
    );
    let (_, tagged) = p.get(&key, "/v1/messages?tag=batch-1").await;
    assert_eq!(tagged["messages"].as_array().unwrap().len(), 2);
    let (_, ranged) = p
        .get(
            &key,
            &format!(
                "/v1/messages?{}",
                range("2026-11-02T10:02:00Z", "2026-11-02T10:04:00Z")
            ),
        )
        .await;
    assert_eq!(ranged["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_messages_or_counts() {
    let p = Pipeline::start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (key_a, key_b) = (p.tenant(a).await, p.tenant(b).await);
    let t0 = utc("2026-11-02T10:00:00Z");
    let mut a_ids = Vec::new();
    for i in 0..5 {
        let id = Uuid::new_v4();
        p.h.append(
            id,
            submit(
                id,
                a,
                t0 + Duration::minutes(i),
                Channel::Email,
                "ses",
                vec!["shared".into()],
            ),
        )
        .await;
        a_ids.push(id);
    }
    let b_id = Uuid::new_v4();
    p.h.append(
        b_id,
        submit(b_id, b, t0, Channel::Email, "ses", vec!["shared".into()]),
    )
    .await;
    p.settle().await;

    let range = range("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z");
    assert_eq!(
        p.stats(&key_a, &range).await["totals"]["counts"]["queued"],
        5
    );
    assert_eq!(
        p.stats(&key_b, &range).await["totals"]["counts"]["queued"],
        1
    );
    assert_eq!(
        p.stats(&key_b, &format!("{range}&source=raw&group_by=tag"))
            .await["totals"]["counts"]["queued"],
        1
    );

    for path in [
        format!("/v1/messages/{}", a_ids[0]),
        format!("/v1/messages/{}/events", a_ids[0]),
    ] {
        let (status, body) = p.get(&key_b, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "message_not_found");
    }
    let (_, list) = p.get(&key_b, "/v1/messages").await;
    let listed: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![b_id.to_string()]);
    // A's consistency token gives B nothing: it never becomes visible to B.
    let token = format!("{}.1", a_ids[0].simple());
    let stale = p
        .stats(
            &key_b,
            &format!("{range}&consistency_token={token}&wait_ms=100"),
        )
        .await;
    assert_eq!(stale["freshness"]["consistent"], false);
    assert_eq!(stale["totals"]["counts"]["queued"], 1);

    let (status, body) = p.get("hrld_nope", "/v1/stats/messages").await;
    assert_eq!(status, 401, "{body}");
    let response = p
        .client
        .get(p.query.url("/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn bad_parameters_are_named_and_injection_changes_nothing() {
    let p = Pipeline::start().await;
    let tenant = Uuid::new_v4();
    let key = p.tenant(tenant).await;
    let id = Uuid::new_v4();
    p.h.append(
        id,
        submit(
            id,
            tenant,
            utc("2026-11-02T10:00:00Z"),
            Channel::Email,
            "ses",
            vec![],
        ),
    )
    .await;
    p.settle().await;
    let rows_before: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM message_events) + (SELECT count(*) FROM messages) + (SELECT count(*) FROM message_rollup_15m)")
        .fetch_one(&p.h.pool)
        .await
        .unwrap();

    let cases: &[(&str, &str)] = &[
        ("from=yesterday", "from"),
        ("to=2026-11-02", "to"),
        ("from=2026-11-03T00:00:00Z&to=2026-11-02T00:00:00Z", "to"),
        ("bucket=fortnight", "bucket"),
        ("tz=Mars%2FOlympus", "tz"),
        ("group_by=recipient", "group_by"),
        ("group_by=channel,provider,status,tag", "group_by"),
        ("channel=fax", "channel"),
        ("status=happy", "status"),
        ("metrics=revenue", "metrics"),
        ("fill=previous", "fill"),
        ("consistency_token=abc", "consistency_token"),
        ("wait_ms=-1", "wait_ms"),
        ("source=cache", "source"),
        ("limit=10", "limit"),
        (
            "from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z&bucket=15m",
            "bucket",
        ),
        (
            "from=2026-11-02T10:07:00Z&to=2026-11-02T11:00:00Z&source=rollup",
            "source",
        ),
    ];
    for (query, param) in cases {
        let (status, body) = p.get(&key, &format!("/v1/stats/messages?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], *param, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(param),
            "{body}"
        );
    }
    let list_cases: &[(&str, &str)] = &[
        ("limit=0", "limit"),
        ("cursor=zzz", "cursor"),
        ("provider=A%20B", "provider"),
        ("wait_ms=99999", "wait_ms"),
    ];
    for (query, param) in list_cases {
        let (status, body) = p.get(&key, &format!("/v1/messages?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], *param, "{query}: {body}");
    }
    let (status, body) = p.get(&key, "/v1/messages?colour=red").await;
    assert_eq!(status, 400, "unknown parameters are refused: {body}");

    let injection = "x'); DROP TABLE messages; --";
    for param in [
        "from",
        "to",
        "bucket",
        "tz",
        "group_by",
        "channel",
        "provider",
        "tag",
        "status",
        "metrics",
        "fill",
        "consistency_token",
        "source",
    ] {
        let (status, body) = p
            .get(
                &key,
                &format!("/v1/stats/messages?{param}={}", enc(injection)),
            )
            .await;
        assert_eq!(status, 400, "{param}: {body}");
    }
    for param in ["status", "channel", "provider", "tag", "cursor", "from"] {
        let (status, _) = p
            .get(&key, &format!("/v1/messages?{param}={}", enc(injection)))
            .await;
        assert_eq!(status, 400, "{param}");
    }
    let (status, _) = p
        .get(&key, &format!("/v1/messages/{}", enc(injection)))
        .await;
    assert_eq!(status, 404);
    let rows_after: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM message_events) + (SELECT count(*) FROM messages) + (SELECT count(*) FROM message_rollup_15m)")
        .fetch_one(&p.h.pool)
        .await
        .unwrap();
    assert_eq!(rows_after, rows_before);
    assert_eq!(
        p.stats(&key, &range("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"))
            .await["totals"]["counts"]["queued"],
        1
    );
}
