//! Statistics through the whole pipeline: events appended, relayed, projected, queried.

use chrono::{DateTime, Duration, Utc};
use domain::{Channel, ObservationKind as K};
use query_service::stats::rollups::{Piece, Read};
use serde_json::Value;
use test_support::events::{observe, submit};
use test_support::pipeline::{enc, range, Pipeline};
use uuid::Uuid;

/// The rollup plan of a query string as the tests build it.
fn plan_of(q: &str) -> Vec<Piece> {
    let pairs: Vec<(String, String)> = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect();
    let q = query_service::stats::params::parse(&pairs, Utc::now()).expect("a valid query");
    query_service::stats::rollups::plan(&q)
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Exact nearest-rank percentile.
fn exact(values: &[i64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).max(1);
    v[rank - 1] as f64
}

fn series<'a>(answer: &'a Value, key: &[(&str, &str)]) -> &'a Value {
    answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| key.iter().all(|(k, v)| s["key"][*k] == *v))
        .unwrap_or_else(|| panic!("no series {key:?} in {}", answer["series"]))
}

#[tokio::test]
async fn counts_rates_and_percentiles_match_an_independent_computation() {
    let p = Pipeline::start().await;
    let tenant = Uuid::new_v4();
    let key = p.tenant(tenant).await;
    let t0 = utc("2026-11-02T10:00:00Z");
    // Email via ses: 20 delivered with known latencies, 5 of them opened (one twice), 2 clicked;
    // 3 hard bounces. SMS via twilio: 4 delivered, 2 failed.
    let mut latencies_submit = Vec::new();
    let mut latencies_dispatch = Vec::new();
    for i in 0..20i64 {
        let id = Uuid::new_v4();
        let submitted = t0 + Duration::seconds(i * 30);
        let dispatched = submitted + Duration::milliseconds(200 + 10 * i);
        let delivered = dispatched + Duration::milliseconds(1_000 + 937 * i * i);
        latencies_submit.push((delivered - submitted).num_milliseconds());
        latencies_dispatch.push((delivered - dispatched).num_milliseconds());
        p.h.append(
            id,
            submit(
                id,
                tenant,
                submitted,
                Channel::Email,
                "ses",
                vec!["welcome".into()],
            ),
        )
        .await;
        p.h.append(id, observe(K::Dispatched, &format!("{id}-d"), dispatched))
            .await;
        p.h.append(id, observe(K::Delivered, &format!("{id}-v"), delivered))
            .await;
        if i < 5 {
            p.h.append(
                id,
                observe(
                    K::Opened,
                    &format!("{id}-o"),
                    delivered + Duration::minutes(2),
                ),
            )
            .await;
        }
        if i == 0 {
            p.h.append(
                id,
                observe(
                    K::Opened,
                    &format!("{id}-o2"),
                    delivered + Duration::minutes(3),
                ),
            )
            .await;
        }
        if i < 2 {
            p.h.append(
                id,
                observe(
                    K::Clicked,
                    &format!("{id}-c"),
                    delivered + Duration::minutes(4),
                ),
            )
            .await;
        }
    }
    for i in 0..3i64 {
        let id = Uuid::new_v4();
        let submitted = t0 + Duration::minutes(20 + i);
        p.h.append(
            id,
            submit(id, tenant, submitted, Channel::Email, "ses", vec![]),
        )
        .await;
        p.h.append(
            id,
            observe(
                K::Dispatched,
                &format!("{id}-d"),
                submitted + Duration::seconds(1),
            ),
        )
        .await;
        p.h.append(
            id,
            observe(
                K::BouncedHard,
                &format!("{id}-b"),
                submitted + Duration::seconds(5),
            ),
        )
        .await;
    }
    for i in 0..6i64 {
        let id = Uuid::new_v4();
        let submitted = t0 + Duration::minutes(30 + i);
        p.h.append(
            id,
            submit(id, tenant, submitted, Channel::Sms, "twilio", vec![]),
        )
        .await;
        let outcome = if i < 4 { K::Delivered } else { K::Failed };
        p.h.append(
            id,
            observe(
                outcome,
                &format!("{id}-x"),
                submitted + Duration::seconds(3),
            ),
        )
        .await;
    }
    p.settle().await;

    let q = format!(
        "{}&bucket=hour&group_by=channel&metrics=counts,rates,latency",
        range("2026-11-02T10:00:00Z", "2026-11-02T12:00:00Z")
    );
    let answer = p.stats(&key, &q).await;
    assert_eq!(answer["source"], "rollup");
    let email = series(&answer, &[("channel", "email")]);
    let buckets = email["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2);
    let first = &buckets[0];
    assert_eq!(first["counts"]["queued"], 23);
    assert_eq!(first["counts"]["dispatched"], 23);
    assert_eq!(first["counts"]["delivered"], 20);
    assert_eq!(first["counts"]["bounced"], 3);
    assert_eq!(first["engagement"]["opened"]["unique"], 5);
    assert_eq!(first["engagement"]["opened"]["total"], 6);
    assert_eq!(first["engagement"]["clicked"]["unique"], 2);
    assert_eq!(first["rates"]["delivery_rate"], 20.0 / 23.0);
    assert_eq!(first["rates"]["bounce_rate"], 3.0 / 23.0);
    assert_eq!(first["rates"]["open_rate"], 5.0 / 20.0);
    assert_eq!(first["rates"]["click_rate"], 2.0 / 20.0);
    assert_eq!(buckets[1]["counts"]["queued"], 0, "fill=zero by default");
    assert_eq!(
        buckets[1]["rates"]["delivery_rate"],
        Value::Null,
        "no denominator, no rate"
    );
    for (metric, values) in [
        ("submit_to_delivered", &latencies_submit),
        ("dispatch_to_delivered", &latencies_dispatch),
    ] {
        let got = &first["latency"][metric];
        assert_eq!(got["samples"], 20);
        for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
            let want = exact(values, q);
            let have = got[name].as_f64().unwrap();
            assert!(
                (have - want).abs() / want <= 0.02,
                "{metric} {name}: {have} vs exact {want}"
            );
        }
    }
    let sms = series(&answer, &[("channel", "sms")]);
    assert_eq!(sms["totals"]["counts"]["delivered"], 4);
    assert_eq!(sms["totals"]["counts"]["failed"], 2);
    assert_eq!(sms["totals"]["rates"]["delivery_rate"], 4.0 / 6.0);
    assert_eq!(answer["totals"]["counts"]["queued"], 29);
    assert_eq!(answer["totals"]["counts"]["delivered"], 24);
    assert!(answer["freshness"]["as_of"].is_string());
    assert_eq!(answer["freshness"]["lag_events"], 0);
    assert_eq!(answer["newest_bucket_open"], false);
    assert!(answer["definitions"]["delivery_rate"]
        .as_str()
        .unwrap()
        .contains("delivered /"));

    // Filters and tags: only the welcome-tagged email.
    let tagged = p.stats(&key, &format!("{q}&tag=welcome")).await;
    assert_eq!(tagged["totals"]["counts"]["queued"], 20);
    let grouped = p.stats(&key, &format!("{q}&group_by=tag")).await;
    assert_eq!(
        series(&grouped, &[("tag", "welcome")])["totals"]["counts"]["delivered"],
        20
    );
    assert_eq!(
        grouped["totals"]["counts"]["queued"], 29,
        "overall totals still count every message once"
    );
    // The POST form answers the same.
    let posted: Value = p
        .client
        .post(p.query.url("/v1/stats/messages:query"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"from": "2026-11-02T10:00:00Z", "to": "2026-11-02T12:00:00Z", "bucket": "hour", "group_by": ["channel"], "metrics": ["counts", "rates", "latency"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["series"], answer["series"]);
    // Raw and rollup agree on this data too.
    let raw = p.stats(&key, &format!("{q}&source=raw")).await;
    assert_eq!(raw["source"], "raw");
    assert_eq!(raw["series"], answer["series"]);
}

#[tokio::test]
async fn local_calendar_buckets_across_dst_and_odd_offsets() {
    let p = Pipeline::start().await;
    let tenant = Uuid::new_v4();
    let key = p.tenant(tenant).await;
    let times = [
        // Berlin, spring: Sat 23:30 CET, Sun 00:30 CET, Sun 23:30 CEST, Mon 00:30 CEST.
        "2026-03-28T22:30:00Z",
        "2026-03-28T23:30:00Z",
        "2026-03-29T21:30:00Z",
        "2026-03-29T22:30:00Z",
        // Berlin, autumn: Sun 25 Oct 00:30 CEST and 23:30 CET are one 25-hour day.
        "2026-10-24T22:30:00Z",
        "2026-10-25T22:30:00Z",
        "2026-10-25T23:30:00Z",
        // Kathmandu (+05:45): 00:10Z is 05:55 local, 00:20Z is 06:05 local.
        "2026-06-01T00:10:00Z",
        "2026-06-01T00:20:00Z",
        // Week: Sunday 22 Nov and Monday 23 Nov 2026 (UTC). Month: 31 Jan 23:30Z is 1 Feb in Berlin.
        "2026-11-22T23:00:00Z",
        "2026-11-23T01:00:00Z",
        "2026-01-31T23:30:00Z",
        "2026-02-01T00:30:00Z",
    ];
    for s in times {
        let id = Uuid::new_v4();
        p.h.append(
            id,
            submit(id, tenant, utc(s), Channel::Email, "ses", vec![]),
        )
        .await;
    }
    p.settle().await;

    let queued = |a: &Value| -> Vec<(String, i64, i64)> {
        a["series"][0]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["start"].as_str().unwrap().to_string(),
                    b["seconds"].as_i64().unwrap(),
                    b["counts"]["queued"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let spring = p
        .stats(
            &key,
            &format!(
                "bucket=day&tz=Europe/Berlin&{}",
                range("2026-03-27T23:00:00Z", "2026-03-30T22:00:00Z")
            ),
        )
        .await;
    assert_eq!(spring["source"], "rollup");
    assert_eq!(
        queued(&spring),
        vec![
            ("2026-03-28T00:00:00+01:00".into(), 86_400, 1),
            ("2026-03-29T00:00:00+01:00".into(), 82_800, 2),
            ("2026-03-30T00:00:00+02:00".into(), 86_400, 1),
        ]
    );
    let utc_days = p
        .stats(
            &key,
            &format!(
                "bucket=day&{}",
                range("2026-03-28T00:00:00Z", "2026-03-30T00:00:00Z")
            ),
        )
        .await;
    assert_eq!(
        queued(&utc_days).iter().map(|b| b.2).collect::<Vec<_>>(),
        vec![2, 2],
        "UTC days split them differently"
    );

    let autumn = p
        .stats(
            &key,
            &format!(
                "bucket=day&tz=Europe/Berlin&{}",
                range("2026-10-24T22:00:00Z", "2026-10-26T23:00:00Z")
            ),
        )
        .await;
    assert_eq!(
        queued(&autumn),
        vec![
            ("2026-10-25T00:00:00+02:00".into(), 90_000, 2),
            ("2026-10-26T00:00:00+01:00".into(), 86_400, 1),
        ]
    );

    let kathmandu = p
        .stats(
            &key,
            &format!(
                "bucket=hour&tz=Asia/Kathmandu&{}",
                range("2026-05-31T23:15:00Z", "2026-06-01T01:15:00Z")
            ),
        )
        .await;
    assert_eq!(kathmandu["source"], "rollup");
    assert_eq!(
        queued(&kathmandu),
        vec![
            ("2026-06-01T05:00:00+05:45".into(), 3_600, 1),
            ("2026-06-01T06:00:00+05:45".into(), 3_600, 1),
        ]
    );

    let weeks = p
        .stats(
            &key,
            &format!(
                "bucket=week&{}",
                range("2026-11-16T00:00:00Z", "2026-11-30T00:00:00Z")
            ),
        )
        .await;
    assert_eq!(
        queued(&weeks),
        vec![
            ("2026-11-16T00:00:00+00:00".into(), 604_800, 1),
            ("2026-11-23T00:00:00+00:00".into(), 604_800, 1),
        ]
    );
    let months = p
        .stats(
            &key,
            &format!(
                "bucket=month&tz=Europe/Berlin&{}",
                range("2025-12-31T23:00:00Z", "2026-02-28T23:00:00Z")
            ),
        )
        .await;
    assert_eq!(
        queued(&months),
        vec![
            ("2026-01-01T00:00:00+01:00".into(), 31 * 86_400, 0),
            ("2026-02-01T00:00:00+01:00".into(), 28 * 86_400, 2),
        ]
    );
    let utc_months = p
        .stats(
            &key,
            &format!(
                "bucket=month&{}",
                range("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z")
            ),
        )
        .await;
    assert_eq!(
        queued(&utc_months).iter().map(|b| b.2).collect::<Vec<_>>(),
        vec![1, 1]
    );
    let sparse = p
        .stats(
            &key,
            &format!(
                "bucket=month&fill=none&{}",
                range("2026-01-01T00:00:00Z", "2026-12-01T00:00:00Z")
            ),
        )
        .await;
    let months: Vec<String> = queued(&sparse)
        .iter()
        .map(|b| b.0[..7].to_string())
        .collect();
    assert_eq!(
        months,
        vec!["2026-01", "2026-02", "2026-03", "2026-06", "2026-10", "2026-11"],
        "fill=none leaves out the empty months"
    );
}

#[tokio::test]
async fn rollup_and_raw_paths_agree_on_random_data() {
    let p = Pipeline::start().await;
    let keys = [
        p.tenant(test_support::events::TENANTS[0]).await,
        p.tenant(test_support::events::TENANTS[1]).await,
    ];
    // Three hours of traffic from 2024-03-01 09:00 UTC, and the same shape across three DST
    // changes: New York (2024-03-10 07:00Z), Berlin (2024-03-31 01:00Z) and Lord Howe, whose
    // clocks move by half an hour (2024-04-06 15:00Z).
    let h = chrono::Duration::hours;
    let m = chrono::Duration::minutes;
    for (seed, shift) in [
        (0x5eed, chrono::Duration::zero()),
        (0x5eee, chrono::Duration::days(9) - h(3) - m(30)),
        (0x5eef, chrono::Duration::days(29) + h(14) + m(30)),
        (0x5ef0, chrono::Duration::days(36) + h(4) + m(30)),
    ] {
        p.h.write(test_support::events::plan(seed, 60).shifted(shift), 4)
            .await;
    }
    p.settle().await;

    let mut rng = test_support::events::Rng(0xfeed);
    let zones = [
        "UTC",
        "Europe/Berlin",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/New_York",
        "Australia/Lord_Howe",
    ];
    let ranges = [
        ("2024-02-29T00:00:00Z", "2024-03-03T00:00:00Z"),
        ("2024-02-29T12:00:00Z", "2024-03-02T00:00:00Z"),
        ("2024-03-01T09:15:00Z", "2024-03-01T11:45:00Z"),
        ("2024-03-09T00:00:00Z", "2024-03-11T00:00:00Z"),
        ("2024-03-30T00:00:00Z", "2024-04-01T00:00:00Z"),
        ("2024-04-05T00:00:00Z", "2024-04-08T00:00:00Z"),
        ("2024-02-01T00:00:00Z", "2024-05-01T00:00:00Z"),
    ];
    let buckets = ["15m", "hour", "day", "week", "month", "none"];
    let dims = ["channel", "provider", "status", "tag"];
    // Every counted round compares non-empty answers: a draw whose filters select nothing
    // is still compared but drawn again, so agreement is never that of two empty series.
    let (mut compared, mut empty) = (0, 0);
    let mut levels: std::collections::BTreeMap<String, usize> = Default::default();
    // Rounds answered from day rows with crossing hours moved between buckets.
    let mut moved_days = 0;
    for round in 0..400 {
        let done = ["15m", "1h", "1d"]
            .iter()
            .all(|l| levels.get(*l).copied().unwrap_or(0) >= 8)
            && moved_days >= 8;
        if compared >= 60 && done {
            break;
        }
        let (from, to) = ranges[rng.below(ranges.len() as u64) as usize];
        let mut q = format!(
            "from={}&to={}&metrics=counts,rates,latency&bucket={}&tz={}",
            enc(from),
            enc(to),
            buckets[rng.below(buckets.len() as u64) as usize],
            zones[rng.below(zones.len() as u64) as usize],
        );
        let group: Vec<&str> = dims
            .iter()
            .copied()
            .filter(|_| rng.chance(35))
            .take(2)
            .collect();
        if !group.is_empty() {
            q.push_str(&format!("&group_by={}", group.join(",")));
        }
        if rng.chance(30) {
            q.push_str("&channel=email");
        }
        if rng.chance(30) {
            q.push_str("&tag=promo");
        }
        if rng.chance(20) {
            q.push_str("&provider=ses,twilio");
        }
        if rng.chance(20) {
            q.push_str("&status=delivered,bounced");
        }
        q.push_str(["&fill=zero", "&fill=null", "&fill=none"][rng.below(3) as usize]);
        let key = &keys[round % 2];
        let (status, rollup) = p
            .get(key, &format!("/v1/stats/messages?{q}&source=rollup"))
            .await;
        let (raw_status, raw) = p
            .get(key, &format!("/v1/stats/messages?{q}&source=raw"))
            .await;
        if status == 400 {
            // Too large an answer is too large from either source.
            assert_eq!(rollup["error"]["code"], "answer_too_large", "{q}");
            assert_eq!(
                (raw_status, &raw["error"]["code"]),
                (400, &rollup["error"]["code"])
            );
            empty += 1;
            continue;
        }
        assert_eq!((status, raw_status), (200, 200), "{q}: {rollup} {raw}");
        assert_eq!(rollup["source"], "rollup");
        assert_eq!(raw["source"], "raw");
        assert!(raw.get("level").is_none());
        assert_eq!(rollup["series"], raw["series"], "{q}");
        assert_eq!(rollup["totals"], raw["totals"], "{q}");
        let level = rollup["level"]
            .as_str()
            .expect("a rollup answer names its level");
        let counted: i64 = raw["totals"]["counts"]
            .as_object()
            .map(|c| c.values().filter_map(Value::as_i64).sum())
            .unwrap_or(0);
        let series = raw["series"].as_array().map_or(0, Vec::len);
        if counted == 0 || series == 0 {
            empty += 1;
            continue;
        }
        // The level divides every bucket edge inside the range (as UTC instants): days
        // only where they are UTC midnights, hours only where they are whole UTC hours.
        let width = match level {
            "1d" => 86_400,
            "1h" => 3_600,
            _ => 900,
        };
        for s in raw["series"].as_array().unwrap() {
            for b in s["buckets"].as_array().unwrap() {
                for edge in [&b["start"], &b["end"]] {
                    let t = chrono::DateTime::parse_from_rfc3339(edge.as_str().unwrap())
                        .unwrap()
                        .timestamp();
                    if t > utc(from).timestamp() && t < utc(to).timestamp() {
                        assert_eq!(t % width, 0, "{level} does not divide {edge}: {q}");
                    }
                }
            }
        }
        *levels.entry(level.to_string()).or_default() += 1;
        if plan_of(&q)
            .iter()
            .any(|p| matches!(p.read, Read::DaysMovingHours(ref m) if !m.is_empty()))
        {
            moved_days += 1;
        }
        compared += 1;
    }
    assert!(
        compared >= 60,
        "{compared} compared, {empty} draws were empty"
    );
    for level in ["15m", "1h", "1d"] {
        assert!(
            levels.get(level).copied().unwrap_or(0) >= 8,
            "level {level} answered too rarely: {levels:?}"
        );
    }
    assert!(
        moved_days >= 8,
        "days with moved hours answered only {moved_days} times"
    );
    // The data is not trivially empty.
    let all = p
        .stats(
            &keys[0],
            &range("2024-02-29T12:00:00Z", "2024-03-02T00:00:00Z"),
        )
        .await;
    assert!(
        all["totals"]["counts"]["delivered"].as_i64().unwrap() > 10,
        "{}",
        all["totals"]
    );
}

#[tokio::test]
async fn read_your_writes_with_the_command_services_token() {
    let p = Pipeline::start().await;
    let command = test_support::RunningApp::spawn(
        command_service::build(p.h.settings.clone()).await.unwrap(),
    );
    let (tenant, key) = service_kit::auth::ApiKeys::new(p.h.pool.clone())
        .create_tenant("ryw")
        .await
        .unwrap();
    let _ = tenant;
    let body = serde_json::json!({"channel": "sms", "recipient": "+4915112345678", "provider": "twilio", "content": {"type": "inline", "body": "code 1234"}});
    let answer: Value = p
        .client
        .post(command.url("/v1/messages"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["consistency_token"].as_str().unwrap().to_string();
    let id = answer["message_id"].as_str().unwrap().to_string();

    let stats = p
        .stats(&key, &format!("consistency_token={token}&wait_ms=10000"))
        .await;
    assert_eq!(stats["freshness"]["consistent"], true);
    assert_eq!(
        stats["totals"]["counts"]["queued"], 1,
        "the new message is counted"
    );

    let (status, message) = p
        .get(
            &key,
            &format!("/v1/messages/{id}?consistency_token={token}&wait_ms=10000"),
        )
        .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["message"]["status"], "queued");
    assert_eq!(message["freshness"]["consistent"], true);

    // A token the projector cannot reach in time says so instead of pretending.
    let unreachable = format!("{}.99", uuid::Uuid::parse_str(&id).unwrap().simple());
    let stale = p
        .stats(&key, &format!("consistency_token={unreachable}&wait_ms=50"))
        .await;
    assert_eq!(stale["freshness"]["consistent"], false);
    command.stop().await;
}

#[tokio::test]
async fn freshness_counts_what_the_projector_has_not_caught_up_with() {
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
    let caught_up = p.stats(&key, "").await;
    assert_eq!(caught_up["freshness"]["lag_events"], 0);
    assert_eq!(caught_up["freshness"]["lag_seconds"], 0.0);

    // With the projector (and its relay) stopped, new events wait in the event store.
    let Pipeline {
        h,
        projector,
        query,
        client,
    } = p;
    projector.stop().await;
    for i in 0..3 {
        let id = Uuid::new_v4();
        h.append(
            id,
            submit(
                id,
                tenant,
                utc("2026-11-02T10:00:00Z") + Duration::minutes(i),
                Channel::Sms,
                "twilio",
                vec![],
            ),
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let lagging: Value = client
        .get(query.url("/v1/stats/messages"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        lagging["freshness"]["lag_events"], 3,
        "{}",
        lagging["freshness"]
    );
    assert!(lagging["freshness"]["lag_seconds"].as_f64().unwrap() > 0.0);

    // A relay without consumers publishes them; they still lag, now per shard.
    let mut tuning = h.tuning();
    tuning.projector_enabled = false;
    let relay_only = h.start("relay-only", tuning).await;
    test_support::events::eventually(
        std::time::Duration::from_secs(30),
        "relay to publish",
        || async {
            let published: Option<i64> =
                sqlx::query_scalar("SELECT global_position FROM relay_checkpoint")
                    .fetch_optional(&h.pool)
                    .await
                    .unwrap();
            let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
                .fetch_one(&h.pool)
                .await
                .unwrap();
            (published == Some(last)).then_some(())
        },
    )
    .await;
    let published: Value = client
        .get(query.url("/v1/stats/messages"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        published["freshness"]["lag_events"], 3,
        "{}",
        published["freshness"]
    );
    relay_only.stop().await;
}

/// One message's random history: a submit, then reports in a random order with
/// revisions (an open before the delivery report, late dispatches, bounces after delivery,
/// failures), some repeated.
fn revised_history(
    rng: &mut test_support::events::Rng,
    tenant: Uuid,
    t0: DateTime<Utc>,
) -> (Uuid, Vec<domain::MessageCommand>) {
    let id = Uuid::new_v4();
    let channel = [Channel::Email, Channel::Sms, Channel::Push][rng.below(3) as usize];
    let submitted = t0 + Duration::seconds(rng.below(3 * 3600) as i64);
    let at = |rng: &mut test_support::events::Rng, max_s: u64| {
        submitted + Duration::milliseconds(rng.below(max_s * 1000) as i64)
    };
    let kinds = [
        K::Dispatched,
        K::Dispatched,
        K::Delivered,
        K::Delivered,
        K::Opened,
        K::Clicked,
        K::BouncedHard,
        K::BouncedSoft,
        K::Failed,
        K::Deferred,
    ];
    let mut reports: Vec<domain::MessageCommand> = (0..(1 + rng.below(6)))
        .map(|i| {
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            observe(kind, &format!("{id}-{i}"), at(rng, 1800))
        })
        .collect();
    if rng.chance(30) && !reports.is_empty() {
        let dup = reports[rng.below(reports.len() as u64) as usize].clone();
        reports.push(dup);
    }
    let mut cmds = vec![submit(
        id,
        tenant,
        submitted,
        channel,
        "p1",
        vec!["rev".into()],
    )];
    cmds.extend(reports);
    (id, cmds)
}

#[derive(Debug, Default, PartialEq)]
struct Expected {
    /// (hour start, channel, status) -> messages entering it.
    counts: std::collections::BTreeMap<(String, String, String), i64>,
    /// (hour start, channel, metric) -> latency samples.
    samples: std::collections::BTreeMap<(String, String, String), Vec<i64>>,
}

/// The answer computed straight from the database, without the projector's code: counts
/// from the events' own `previous_status -> status`, latencies from the `messages` state
/// (one sample per delivered message, at its delivery time).
async fn expected(p: &Pipeline, tenant: Uuid) -> Expected {
    let hour = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:00:00+00:00").to_string();
    let mut e = Expected::default();
    let transitions: Vec<(DateTime<Utc>, String, String)> = sqlx::query_as(
        "SELECT (j.value->>'occurred_at')::timestamptz, j.value->>'channel', j.value->>'status' \
           FROM events, jsonb_each(payload) j \
          WHERE j.value->>'tenant_id' = $1 \
            AND (j.value->>'previous_status') IS DISTINCT FROM (j.value->>'status')",
    )
    .bind(tenant.to_string())
    .fetch_all(&p.h.pool)
    .await
    .unwrap();
    for (at, channel, status) in transitions {
        *e.counts.entry((hour(at), channel, status)).or_default() += 1;
    }
    type Delivered = (DateTime<Utc>, String, Option<i64>, Option<i64>);
    let delivered: Vec<Delivered> = sqlx::query_as(
        "SELECT delivered_at, channel, latency_ms_from_submit, latency_ms_from_dispatch \
           FROM messages WHERE version = 1 AND tenant_id = $1 AND status = 'delivered'",
    )
    .bind(tenant)
    .fetch_all(&p.h.pool)
    .await
    .unwrap();
    for (at, channel, submit, dispatch) in delivered {
        for (metric, v) in [
            ("submit_to_delivered", submit),
            ("dispatch_to_delivered", dispatch),
        ] {
            if let Some(v) = v {
                e.samples
                    .entry((hour(at), channel.clone(), metric.to_string()))
                    .or_default()
                    .push(v);
            }
        }
    }
    e
}

fn check_answer(answer: &Value, want: &Expected, what: &str) {
    let mut seen_samples = 0;
    let mut seen_counts = 0;
    for s in answer["series"].as_array().unwrap() {
        let channel = s["key"]["channel"].as_str().unwrap().to_string();
        for b in s["buckets"].as_array().unwrap() {
            let start = b["start"].as_str().unwrap().to_string();
            for (status, n) in b["counts"].as_object().unwrap() {
                let n = n.as_i64().unwrap();
                let w = want
                    .counts
                    .get(&(start.clone(), channel.clone(), status.clone()))
                    .copied()
                    .unwrap_or(0);
                assert_eq!(n, w, "{what}: {start} {channel} {status}");
                seen_counts += n;
            }
            for (metric, pct) in b["latency"].as_object().unwrap() {
                let samples = want
                    .samples
                    .get(&(start.clone(), channel.clone(), metric.clone()))
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(
                    pct["samples"].as_i64().unwrap(),
                    samples.len() as i64,
                    "{what}: one sample per delivered message, {start} {channel} {metric}"
                );
                seen_samples += samples.len();
                for (q, name) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                    match pct[name].as_f64() {
                        None => assert!(samples.is_empty(), "{what}: {name} missing"),
                        Some(got) => {
                            let want = exact(&samples, q);
                            let err = if want == 0.0 {
                                got
                            } else {
                                ((got - want) / want).abs()
                            };
                            assert!(err <= 0.01 + 1e-9, "{what}: {name} {got} vs exact {want}");
                        }
                    }
                }
            }
        }
    }
    let want_samples: usize = want.samples.values().map(Vec::len).sum();
    let want_counts: i64 = want.counts.values().sum();
    assert_eq!(
        seen_samples, want_samples,
        "{what}: every sample is in the answer"
    );
    assert_eq!(
        seen_counts, want_counts,
        "{what}: every transition is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revised_deliveries_count_one_latency_sample_per_message_on_both_paths_and_after_rebuild() {
    let p = Pipeline::start().await;
    let t0 = utc("2026-11-03T08:00:00Z");
    let query = format!(
        "{}&bucket=hour&group_by=channel&metrics=counts,latency&fill=none",
        range("2026-11-03T08:00:00Z", "2026-11-03T12:00:00Z")
    );
    let mut tenants = Vec::new();
    // Rounds of random histories, each for a tenant of its own.
    for seed in 1..=6u64 {
        let tenant = Uuid::new_v4();
        let key = p.tenant(tenant).await;
        let mut rng = test_support::events::Rng(seed * 7919);
        let mut revised = 0;
        for _ in 0..40 {
            let (id, cmds) = revised_history(&mut rng, tenant, t0);
            for cmd in cmds {
                p.h.append(id, cmd).await;
            }
            let changes: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events, jsonb_each(payload) j \
                  WHERE aggregate_id = $1 AND (j.value->'submit_latency'->'before') IS NOT NULL \
                    AND j.value->'submit_latency'->'before' <> 'null'::jsonb",
            )
            .bind(id.to_string())
            .fetch_one(&p.h.pool)
            .await
            .unwrap();
            revised += changes;
        }
        tenants.push((tenant, key, revised));
    }
    p.settle().await;
    let total_revised: i64 = tenants.iter().map(|t| t.2).sum();
    assert!(
        total_revised > 10,
        "the histories revise deliveries ({total_revised} times)"
    );
    let mut live = Vec::new();
    for (tenant, key, _) in &tenants {
        let want = expected(&p, *tenant).await;
        assert!(!want.samples.is_empty() && !want.counts.is_empty());
        for source in ["rollup", "raw"] {
            let answer = p.stats(key, &format!("{query}&source={source}")).await;
            check_answer(&answer, &want, &format!("tenant {tenant} via {source}"));
            if source == "rollup" {
                live.push(answer);
            }
        }
    }

    // A rebuild from the event store gives exactly the live answers.
    let ctx = p.h.context(p.h.tuning()).await;
    let version = projector::admin::rebuild(&ctx).await.unwrap();
    assert_eq!(version, 2);
    for ((_, key, _), before) in tenants.iter().zip(&live) {
        let mut after = p.stats(key, &format!("{query}&source=rollup")).await;
        let mut before = before.clone();
        for a in [&mut after, &mut before] {
            a.as_object_mut().unwrap().remove("freshness");
        }
        assert_eq!(after, before);
    }
}
