//! The query service against `docs/openapi.json`: parameter names are exactly the ones
//! the code accepts (its own whitelist, serde's "expected one of" answers), enums, limits
//! and answer keys are the code's, and its real answers match the schemas the document
//! gives them.

use std::collections::BTreeSet;

use chrono::Utc;
use domain::{Channel, MessageStatus, ObservationKind as K};
use query_service::reads::{ConsistencyParams, ListParams, TimelineParams};
use query_service::stats::params;
use serde_json::{json, Value};
use test_support::events::{observe, submit};
use test_support::openapi::{
    assert_documented, doc, enum_of, fields_of, operation, property_names, query_params, resolve,
    schema, set, strings,
};
use test_support::pipeline::Pipeline;

#[test]
fn query_parameter_and_field_names_are_exactly_the_codes() {
    let doc = doc();
    // Statistics: the validator's whitelist plus the `source` override, in both forms.
    let mut known = set(params::KNOWN.iter().copied());
    known.insert("source".into());
    assert_eq!(
        query_params(&doc, "/v1/stats/messages", "get"),
        known,
        "GET /v1/stats/messages parameters"
    );
    assert_eq!(
        property_names(&doc, "StatsQueryBody"),
        known,
        "POST body fields"
    );
    assert_eq!(
        schema(&doc, "StatsQueryBody")["additionalProperties"],
        false
    );
    // The user guide documents each of them too.
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/query-api.md"))
            .expect("docs/query-api.md exists");
    for name in &known {
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/query-api.md documents {name}"
        );
    }

    // Reads: serde's own list of the fields each parameter struct accepts.
    assert_eq!(
        query_params(&doc, "/v1/messages", "get"),
        fields_of::<ListParams>(json!({}))
    );
    assert_eq!(
        query_params(&doc, "/v1/messages/{id}", "get"),
        fields_of::<ConsistencyParams>(json!({}))
    );
    assert_eq!(
        query_params(&doc, "/v1/messages/{id}/events", "get"),
        fields_of::<TimelineParams>(json!({}))
    );
}

/// The values listed after `marker` in a validation message, e.g. "expected zero, null or
/// none".
fn listed_after(message: &str, marker: &str) -> BTreeSet<String> {
    let rest = message
        .split_once(marker)
        .unwrap_or_else(|| panic!("{message:?} lists after {marker:?}"))
        .1;
    rest.replace(" or ", ", ")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn stats_error(name: &str, value: &str) -> String {
    params::parse(&[(name.to_string(), value.to_string())], Utc::now())
        .expect_err("refused")
        .to_string()
}

#[test]
fn query_enums_and_limits_are_the_codes() {
    let doc = doc();
    assert_eq!(
        enum_of(&doc, "Channel"),
        set(Channel::ALL.iter().map(|c| c.as_str()))
    );
    assert_eq!(
        enum_of(&doc, "MessageStatus"),
        set(MessageStatus::ALL.iter().map(|s| s.as_str()))
    );
    assert_eq!(
        enum_of(&doc, "Bucket"),
        set(query_service::stats::buckets::Bucket::NAMES.split(", "))
    );
    assert_eq!(
        enum_of(&doc, "MetricName"),
        set(params::Metric::NAMES.split(", "))
    );
    assert_eq!(
        enum_of(&doc, "Fill"),
        listed_after(&stats_error("fill", "zz"), "expected")
    );
    assert_eq!(
        enum_of(&doc, "GroupByDimension"),
        listed_after(&stats_error("group_by", "zz"), "three of")
    );
    // Every documented value is accepted, alone and as the code's defaults say.
    for (name, schema_name) in [
        ("bucket", "Bucket"),
        ("metrics", "MetricName"),
        ("fill", "Fill"),
        ("group_by", "GroupByDimension"),
        ("channel", "Channel"),
        ("status", "MessageStatus"),
    ] {
        for value in enum_of(&doc, schema_name) {
            let pairs = [
                (name.to_string(), value.clone()),
                ("from".into(), "2026-01-01T00:00:00Z".into()),
                ("to".into(), "2026-01-02T00:00:00Z".into()),
            ];
            params::parse(&pairs, Utc::now())
                .unwrap_or_else(|e| panic!("{name}={value} is accepted: {e}"));
        }
    }
    let stats_get = operation(&doc, "/v1/stats/messages", "get");
    let param = |name: &str| -> &Value {
        stats_get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p))
            .find(|p| p["name"] == name && p["in"] == "query")
            .unwrap_or_else(|| panic!("{name}"))
    };
    let defaults = params::parse(&[], Utc::now()).unwrap();
    assert_eq!(
        param("bucket")["schema"]["default"],
        defaults.bucket.as_str()
    );
    assert_eq!(param("tz")["schema"]["default"], defaults.tz.name());
    assert_eq!(param("fill")["schema"]["default"], "zero");
    assert_eq!(defaults.fill, params::Fill::Zero);
    assert_eq!(
        param("group_by")["schema"]["maxItems"],
        params::MAX_GROUP_BY
    );
    for name in ["channel", "provider", "tag", "status"] {
        assert_eq!(
            param(name)["schema"]["maxItems"],
            params::MAX_FILTER_VALUES,
            "{name}"
        );
    }
    let wait = &doc["components"]["parameters"]["WaitMs"];
    assert_eq!(wait["schema"]["maximum"], params::MAX_WAIT_MS);
    assert_eq!(wait["schema"]["default"], defaults.wait_ms);
    let limit = &operation(&doc, "/v1/messages", "get")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"];
    assert_eq!(limit["maximum"], query_service::reads::MAX_PAGE);

    // Answer keys.
    use query_service::stats::answer;
    assert_eq!(
        strings(&schema(&doc, "StatusCounts")["required"]),
        set(answer::COUNTED_STATUSES.iter().map(|s| s.as_str()))
    );
    assert_eq!(property_names(&doc, "Engagement"), set(answer::ENGAGEMENTS));
    assert_eq!(
        strings(&schema(&doc, "StatsAnswer")["properties"]["definitions"]["required"]),
        set(answer::DEFINITIONS.iter().map(|(k, _)| *k))
    );
    assert_eq!(
        property_names(&doc, "Latency"),
        set(query_service::stats::engine::LATENCY_METRICS
            .iter()
            .map(|(_, n)| *n))
    );
    assert_eq!(
        strings(&schema(&doc, "TimelineEvent")["properties"]["event_type"]["enum"]),
        set(domain::MessageEvent::EVENT_TYPES.iter().copied())
    );
    let sources: BTreeSet<String> = [
        query_service::stats::engine::Source::Rollup,
        query_service::stats::engine::Source::Raw,
    ]
    .iter()
    .map(|s| {
        serde_json::to_value(s)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    })
    .collect();
    assert_eq!(
        strings(&schema(&doc, "StatsAnswer")["properties"]["source"]["enum"]),
        sources
    );
}

// ------------------------------------------------------------- the running service --

#[tokio::test]
async fn the_query_service_serves_the_document_and_its_answers_match_it() {
    let doc = doc();
    let p = Pipeline::start().await;
    let served = p
        .client
        .get(p.query.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.text().await.unwrap(), service_kit::openapi::DOCUMENT);

    let tenant = uuid::Uuid::new_v4();
    let key = p.tenant(tenant).await;
    let id = uuid::Uuid::new_v4();
    let now = Utc::now();
    let at = |ms: i64| now + chrono::Duration::milliseconds(ms);
    p.h.append(
        id,
        submit(
            id,
            tenant,
            now,
            Channel::Email,
            "ses",
            vec!["welcome".into()],
        ),
    )
    .await;
    let mut sequence = 1;
    for (i, kind) in [K::Dispatched, K::Delivered, K::Opened, K::Clicked]
        .into_iter()
        .enumerate()
    {
        sequence +=
            p.h.append(
                id,
                observe(kind, &format!("k{i}"), at(100 * (i as i64 + 1))),
            )
            .await;
    }
    let token = format!("{}.{sequence}", id.simple());
    let missing = uuid::Uuid::new_v4();
    // Reads, waiting for the last observation.
    let get = |path: String| {
        let request = p.client.get(p.query.url(&path)).bearer_auth(&key);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let wait = format!("consistency_token={token}&wait_ms=10000");
    let (status, body) = get(format!("/v1/messages/{id}?{wait}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["freshness"]["consistent"], true);
    assert_documented(&doc, "get", "/v1/messages/{id}", status, &body);
    let (status, body) = get(format!("/v1/messages/{id}/events")).await;
    assert_documented(&doc, "get", "/v1/messages/{id}/events", status, &body);
    let (status, body) = get(format!("/v1/messages/{missing}/events")).await;
    assert_eq!(status, 404);
    assert_documented(&doc, "get", "/v1/messages/{id}/events", status, &body);
    let (status, body) = get("/v1/messages?limit=1&channel=email".into()).await;
    assert_documented(&doc, "get", "/v1/messages", status, &body);
    let (status, body) = get("/v1/messages?limit=0".into()).await;
    assert_eq!(status, 400);
    assert_documented(&doc, "get", "/v1/messages", status, &body);

    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let range = format!(
        "from={}&to={}",
        test_support::pipeline::enc(&from),
        test_support::pipeline::enc(&to)
    );
    for query in [
        format!("{range}&{wait}"),
        format!("{range}&group_by=channel,tag&metrics=counts,rates,latency&bucket=15m&fill=null&tz=Asia%2FKathmandu"),
        format!("{range}&group_by=status&metrics=counts,rates,latency&fill=zero&source=raw"),
        format!("{range}&bucket=none&metrics=latency_submit_to_delivered,open_rate&fill=none"),
    ] {
        let (status, body) = get(format!("/v1/stats/messages?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_documented(&doc, "get", "/v1/stats/messages", status, &body);
    }
    let (status, body) = get("/v1/stats/messages?source=zz".into()).await;
    assert_eq!(status, 400);
    assert_documented(&doc, "get", "/v1/stats/messages", status, &body);
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        listed_after(message, "expected"),
        enum_of(&doc, "StatsSource"),
        "source values"
    );
    let response = p
        .client
        .post(p.query.url("/v1/stats/messages:query"))
        .bearer_auth(&key)
        .json(
            &json!({"from": from, "to": to, "bucket": "day", "tz": "Europe/Berlin",
                      "group_by": ["channel"], "metrics": ["counts", "rates", "latency"],
                      "wait_ms": 10}),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_documented(&doc, "post", "/v1/stats/messages:query", status, &body);

    // Unauthenticated and operational answers.
    let (status, body) = {
        let response = p
            .client
            .get(p.query.url("/v1/stats/messages"))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 401);
    assert_documented(&doc, "get", "/v1/stats/messages", status, &body);
    for path in ["/health/live", "/health/ready"] {
        let response = p.client.get(p.query.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        assert_documented(&doc, "get", path, status, &body);
    }
}
