//! The oracle's expectation for hand-written histories, against values worked out by hand.

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::{Channel, MessageCommand, ObservationKind};
use event_store::{Cursor, EventRow, StoredEvent};
use oracle::model::expect;
use read_model::rollup::{Level, STATUSES};
use test_support::events::{observe, submit};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 14, 0).unwrap()
}

/// The stream the domain decides for `commands`, as the event store would hold it.
fn stream(commands: Vec<MessageCommand>) -> Vec<StoredEvent> {
    use cqrs_es::{Aggregate, DomainEvent};
    let mut state = domain::Message::default();
    let mut out = Vec::new();
    for cmd in commands {
        for e in domain::decide(&state, cmd).expect("accepted") {
            let n = out.len() as i64 + 1;
            out.push(StoredEvent {
                cursor: Cursor::new(100 + n, n),
                aggregate_type: "Message".into(),
                row: EventRow {
                    aggregate_id: e.message_id().to_string(),
                    sequence: n,
                    event_type: e.event_type(),
                    event_version: e.event_version(),
                    payload: serde_json::to_string(&e).unwrap(),
                    metadata: r#"{"tenant_id":"x","traceparent":"tp"}"#.into(),
                },
                recorded_at: t0() + Duration::seconds(n),
            });
            state.apply(e);
        }
    }
    out
}

#[test]
fn a_delivery_revised_by_a_report_moves_its_latency_sample() {
    let id = Uuid::from_u128(7);
    let tenant = Uuid::from_u128(1);
    let m = |mins: i64| t0() + Duration::minutes(mins);
    let events = stream(vec![
        submit(id, tenant, t0(), Channel::Email, "ses", vec!["a".into()]),
        observe(ObservationKind::Dispatched, "d", m(1)),
        // An open first: delivery inferred at 12:34.
        observe(ObservationKind::Opened, "o", m(20)),
        // Then the real report: delivered at 12:19, which replaces the inference.
        observe(ObservationKind::Delivered, "v", m(5)),
    ]);
    let want = expect(&events, |_| true).unwrap();
    // submitted, dispatched, delivered (inferred), opened, delivered (reported)
    let kinds: Vec<&str> = want.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "MessageSubmitted",
            "MessageDispatched",
            "MessageDelivered",
            "EngagementRecorded",
            "MessageDelivered"
        ]
    );
    // The inferred delivery: 20 min after submission, 19 after dispatch.
    assert_eq!(want.events[2].latency_ms_from_submit, Some(20 * 60_000));
    assert_eq!(want.events[2].latency_ms_from_dispatch, Some(19 * 60_000));
    // The report: 5 and 4 minutes.
    assert_eq!(want.events[4].latency_ms_from_submit, Some(5 * 60_000));
    assert_eq!(want.events[4].latency_ms_from_dispatch, Some(4 * 60_000));
    assert_eq!(want.events[3].engagement_first, Some(true));
    let msg = want.message.unwrap();
    assert_eq!(msg.status, "delivered");
    assert_eq!(msg.delivered_at, Some(m(5)));
    assert_eq!(msg.delivery_inferred, Some(false));
    assert_eq!(msg.opened_at, Some(m(20)));
    assert_eq!(msg.latency_ms_from_submit, Some(300_000));
    assert_eq!(msg.last_sequence, 5);

    // One sample per metric and tag value ('' and 'a'), in the bucket of 12:19 (12:15),
    // none left in the bucket of the inferred delivery (12:30).
    let bin = read_model::sketch::bin_of;
    let quarter = |hm: &str, tag: &str| {
        want.rollups
            .iter()
            .find(|(k, _)| {
                k.level == Level::Quarter
                    && k.dims.bucket.format("%H:%M").to_string() == hm
                    && k.dims.tag == tag
            })
            .map(|(_, r)| r.clone())
    };
    for tag in ["", "a"] {
        let at_1215 = quarter("12:15", tag).expect("a 12:15 row");
        assert_eq!(
            at_1215.sketches,
            [
                [(bin(300_000), 1)].into_iter().collect(),
                [(bin(240_000), 1)].into_iter().collect()
            ]
        );
        // Status counts: queued at 12:14 (bucket 12:00), dispatched at 12:15, delivered at
        // 12:34 (bucket 12:30, the inference); the report changes no status.
        let status = |hm: &str, s: &str| {
            let i = STATUSES.iter().position(|x| *x == s).unwrap();
            quarter(hm, tag).map_or(0, |r| r.entered[i])
        };
        assert_eq!(status("12:00", "queued"), 1);
        assert_eq!(status("12:15", "dispatched"), 1);
        assert_eq!(status("12:30", "delivered"), 1);
        let at_1230 = quarter("12:30", tag).unwrap();
        assert!(at_1230.sketches.iter().all(|s| s.is_empty()), "{at_1230:?}");
        assert_eq!(at_1230.engaged_first[0], 1, "the first open");
    }
    // The hour and the day hold the sums of their quarters.
    for level in [Level::Hour, Level::Day] {
        let rows: Vec<_> = want
            .rollups
            .iter()
            .filter(|(k, _)| k.level == level && k.dims.tag.is_empty())
            .collect();
        assert_eq!(rows.len(), 1, "{level:?}");
        let r = rows[0].1;
        assert_eq!(r.entered.iter().sum::<i64>(), 3);
        assert_eq!(r.sketches[0].values().sum::<i64>(), 1);
    }
}

#[test]
fn only_applied_events_count_and_an_unreadable_applied_one_is_an_error() {
    let id = Uuid::from_u128(8);
    let mut events = stream(vec![
        submit(id, Uuid::from_u128(1), t0(), Channel::Sms, "twilio", vec![]),
        observe(
            ObservationKind::Dispatched,
            "d",
            t0() + Duration::minutes(1),
        ),
        observe(ObservationKind::Delivered, "v", t0() + Duration::minutes(2)),
    ]);
    let first_two = expect(&events, |e| e.row.sequence <= 2).unwrap();
    assert_eq!(first_two.events.len(), 2);
    let msg = first_two.message.unwrap();
    assert_eq!(msg.status, "dispatched");
    assert_eq!(msg.last_sequence, 2);
    assert!(first_two
        .rollups
        .values()
        .all(|r| r.sketches.iter().all(|s| s.is_empty())));
    let none = expect(&events, |_| false).unwrap();
    assert!(none.events.is_empty() && none.message.is_none() && none.rollups.is_empty());

    events[2].row.payload = r#"{"MessageDelivered": {"broken": true}}"#.into();
    // Parked (not applied): fine. Applied: the oracle says it cannot read it.
    assert_eq!(
        expect(&events, |e| e.row.sequence <= 2)
            .unwrap()
            .events
            .len(),
        2
    );
    let err = expect(&events, |_| true).unwrap_err();
    assert_eq!(err.sequence, 3);
}
