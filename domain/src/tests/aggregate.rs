//! Each rule exercised through `decide`/`apply` (and once through cqrs-es `handle`).

use chrono::Duration;
use cqrs_es::test::TestFramework;
use cqrs_es::{Aggregate, DomainEvent};
use serde_json::json;
use uuid::Uuid;

use super::support::*;
use crate::rules::{MAX_DISPATCH_ATTEMPTS, MAX_OBSERVATIONS};
use crate::{
    decide, BounceKind, Channel, EngagementKind, ErrorKind, Message, MessageCommand, MessageError,
    MessageEvent, MessageStatus, ObservationKind as K,
};

fn cancel(minutes: i64) -> MessageCommand {
    MessageCommand::Cancel {
        reason: Some("changed my mind".into()),
        requested_at: t(minutes),
    }
}

fn expire(minutes: i64) -> MessageCommand {
    MessageCommand::Expire { at: t(minutes) }
}

fn delivered_event(events: &[MessageEvent]) -> &crate::MessageDelivered {
    events
        .iter()
        .find_map(|e| match e {
            MessageEvent::MessageDelivered(d) => Some(d),
            _ => None,
        })
        .expect("a MessageDelivered event")
}

#[test]
fn submit_records_everything_the_read_side_needs() {
    let mut m = Message::default();
    let mut cmd = submit(Channel::Email);
    cmd.ttl_seconds = Some(3600);
    let events = ok(&mut m, MessageCommand::Submit(cmd));
    assert_eq!(type_names(&events), ["MessageSubmitted"]);
    let MessageEvent::MessageSubmitted(e) = &events[0] else {
        unreachable!()
    };
    assert_eq!(e.header.tenant_id, TENANT);
    assert_eq!(e.header.message_id, MESSAGE);
    assert_eq!(e.header.channel, Channel::Email);
    assert_eq!(e.header.provider, "acme");
    assert_eq!(e.header.occurred_at, t(0));
    assert_eq!(e.header.received_at, t(0));
    assert_eq!(e.header.status, MessageStatus::Queued);
    assert_eq!(e.header.previous_status, None);
    assert_eq!(e.expires_at, Some(t(60)));
    assert_eq!(e.request_fingerprint, "fp-1");
    assert_eq!(m.status(), MessageStatus::Queued);
    assert_eq!(m.expires_at(), Some(t(60)));
    assert_eq!(m.submission().unwrap().recipient, "ada@example.com");
}

#[test]
fn submit_in_the_future_is_scheduled() {
    let mut m = Message::default();
    let mut cmd = submit(Channel::Sms);
    cmd.scheduled_at = Some(t(30));
    cmd.ttl_seconds = Some(600);
    ok(&mut m, MessageCommand::Submit(cmd));
    assert_eq!(m.status(), MessageStatus::Scheduled);
    assert_eq!(m.expires_at(), Some(t(40)));
}

#[test]
fn invalid_submit_names_the_field_and_records_nothing() {
    let mut cmd = submit(Channel::Sms);
    cmd.recipient = "ada@example.com".into();
    let err = decide(&Message::default(), MessageCommand::Submit(cmd)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert_eq!(err.field(), Some("recipient"));
}

// Rule 1.
#[test]
fn submit_once_replay_is_a_no_op_and_another_body_conflicts() {
    let mut m = submitted(Channel::Email);
    let before = m.clone();
    assert_eq!(
        run(&mut m, MessageCommand::Submit(submit(Channel::Email))),
        Ok(vec![])
    );
    let mut other = submit(Channel::Email);
    other.request_fingerprint = "fp-2".into();
    let err = run(&mut m, MessageCommand::Submit(other)).unwrap_err();
    assert_eq!(err.code(), "idempotency_key_reused");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(m, before);
}

#[test]
fn submit_replay_after_progress_is_still_a_no_op() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Delivered, "d", 5));
    assert_eq!(
        run(&mut m, MessageCommand::Submit(submit(Channel::Email))),
        Ok(vec![])
    );
    assert_eq!(m.status(), MessageStatus::Delivered);
}

// Rule 2.
#[test]
fn commands_on_a_message_never_submitted_are_not_found() {
    let empty = Message::default();
    for cmd in [observe(K::Delivered, "d", 1), cancel(1), expire(1)] {
        let err = decide(&empty, cmd).unwrap_err();
        assert_eq!(err, MessageError::MessageNotFound);
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
}

#[test]
fn malformed_input_is_invalid_even_on_a_missing_message() {
    let mut bad = obs(K::Delivered, "", 1);
    bad.details = json!([1]);
    let err = decide(&Message::default(), MessageCommand::RecordObservation(bad)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

#[test]
fn ensure_tenant_hides_other_tenants_messages() {
    let m = submitted(Channel::Email);
    assert!(m.ensure_tenant(TENANT).is_ok());
    assert_eq!(
        m.ensure_tenant(Uuid::from_u128(9)).unwrap_err(),
        MessageError::MessageNotFound
    );
    assert_eq!(
        Message::default().ensure_tenant(TENANT).unwrap_err(),
        MessageError::MessageNotFound
    );
}

// Rule 3.
#[test]
fn a_dedupe_key_already_seen_changes_nothing() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Dispatched, "k1", 1));
    let before = m.clone();
    // Same key, even with another kind or time: the same report delivered again.
    for cmd in [
        observe(K::Dispatched, "k1", 1),
        observe(K::Delivered, "k1", 9),
    ] {
        assert_eq!(run(&mut m, cmd), Ok(vec![]));
    }
    assert_eq!(m, before);
    assert_eq!(m.dispatch_attempts(), 1);
    assert!(m.has_seen("k1"));
    assert_eq!(m.observation_count(), 1);
}

#[test]
fn inferred_delivery_shares_its_engagement_dedupe_key() {
    let mut m = submitted(Channel::Email);
    let events = ok(&mut m, observe(K::Opened, "open-1", 3));
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.dedupe_key() == Some("open-1")));
    assert_eq!(m.observation_count(), 1);
    assert_eq!(run(&mut m, observe(K::Opened, "open-1", 3)), Ok(vec![]));
}

#[test]
fn observations_are_bounded_per_message() {
    let mut m = submitted(Channel::Push);
    for i in 0..MAX_OBSERVATIONS {
        ok(&mut m, observe(K::Opened, &format!("o{i}"), 1));
    }
    let err = run(&mut m, observe(K::Clicked, "one-more", 1)).unwrap_err();
    assert_eq!(err.code(), "observation_limit_reached");
    assert_eq!(err.kind(), ErrorKind::RuleViolation);
    // Duplicates of recorded reports stay harmless.
    assert_eq!(run(&mut m, observe(K::Opened, "o0", 1)), Ok(vec![]));
}

#[test]
fn observations_long_before_submission_are_refused() {
    let mut m = submitted(Channel::Email);
    assert!(run(&mut m, observe(K::Delivered, "d", -15)).is_ok());
    let err = run(&mut m, observe(K::Delivered, "d2", -16)).unwrap_err();
    assert_eq!(err.code(), "observed_before_submission");
    assert_eq!(err.field(), Some("occurred_at"));
}

#[test]
fn observations_from_the_future_are_invalid() {
    let mut future = obs(K::Delivered, "d", 60);
    future.received_at = t(30);
    let err = decide(
        &submitted(Channel::Email),
        MessageCommand::RecordObservation(future),
    )
    .unwrap_err();
    assert_eq!(err.code(), "invalid_occurred_at");
}

// Rule 4.
#[test]
fn a_late_dispatch_never_lowers_the_status_but_its_time_is_kept() {
    let mut m = submitted(Channel::Sms);
    let delivered = ok(&mut m, observe(K::Delivered, "d", 10));
    assert_eq!(delivered_event(&delivered).latency_ms_from_dispatch, None);
    assert_eq!(m.latency_ms_from_dispatch(), None);

    let events = ok(&mut m, observe(K::Dispatched, "x", 4));
    let MessageEvent::MessageDispatched(e) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(e.header.status, MessageStatus::Delivered);
    assert_eq!(e.header.previous_status, Some(MessageStatus::Delivered));
    assert!(!events[0].status_changed());
    assert_eq!(e.dispatched_at, t(4));
    assert_eq!(e.latency_ms_from_dispatch, Some(6 * 60_000));
    assert_eq!(events[0].latency_ms_from_dispatch(), Some(6 * 60_000));
    assert_eq!(m.status(), MessageStatus::Delivered);
    assert_eq!(m.dispatched_at(), Some(t(4)));
    assert_eq!(m.latency_ms_from_dispatch(), Some(6 * 60_000));

    // A later second attempt changes neither the dispatch time nor the latency.
    let again = ok(&mut m, observe(K::Dispatched, "y", 6));
    let MessageEvent::MessageDispatched(e) = &again[0] else {
        panic!()
    };
    assert_eq!(e.dispatched_at, t(4));
    assert_eq!(e.latency_ms_from_dispatch, None);
    assert_eq!(e.attempt, 2);
}

#[test]
fn a_late_deferral_after_delivery_keeps_delivered() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Delivered, "d", 10));
    let events = ok(&mut m, observe(K::Deferred, "q", 2));
    assert_eq!(type_names(&events), ["MessageDeferred"]);
    assert_eq!(m.status(), MessageStatus::Delivered);
    assert_eq!(m.deferred_at(), Some(t(2)));
}

// Rule 5.
#[test]
fn email_late_hard_bounce_replaces_delivered() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Delivered, "d", 1));
    let events = ok(&mut m, observe(K::BouncedHard, "b", 90));
    assert_eq!(events[0].previous_status(), Some(MessageStatus::Delivered));
    assert_eq!(events[0].status(), MessageStatus::Bounced);
    assert_eq!(m.status(), MessageStatus::Bounced);
    assert_eq!(m.bounce(), Some(BounceKind::Hard));
    assert_eq!(m.outcome_at(), Some(t(90)));
    // The delivery fact survives the status change.
    assert_eq!(m.delivered_at(), Some(t(1)));
}

#[test]
fn sms_delivered_is_final_against_a_later_bounce() {
    let mut m = submitted(Channel::Sms);
    ok(&mut m, observe(K::Delivered, "d", 1));
    let events = ok(&mut m, observe(K::BouncedHard, "b", 90));
    assert_eq!(events[0].status(), MessageStatus::Delivered);
    assert_eq!(m.status(), MessageStatus::Delivered);
    assert_eq!(m.bounce(), None);
}

#[test]
fn an_earlier_failure_arriving_late_replaces_delivered() {
    let mut m = submitted(Channel::Push);
    ok(&mut m, observe(K::Delivered, "d", 10));
    ok(&mut m, observe(K::Failed, "f", 5));
    assert_eq!(m.status(), MessageStatus::Failed);
    assert_eq!(m.outcome().unwrap().dedupe_key, "f");
}

// Rule 6.
#[test]
fn engagement_before_delivery_infers_it() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Dispatched, "x", 1));
    let events = ok(&mut m, observe(K::Opened, "o", 4));
    assert_eq!(
        type_names(&events),
        ["MessageDelivered", "EngagementRecorded"]
    );
    let d = delivered_event(&events);
    assert!(d.inferred);
    assert_eq!(d.header.previous_status, Some(MessageStatus::Dispatched));
    assert_eq!(d.header.status, MessageStatus::Delivered);
    assert_eq!(d.latency_ms_from_submit, Some(4 * 60_000));
    assert_eq!(d.latency_ms_from_dispatch, Some(3 * 60_000));
    let MessageEvent::EngagementRecorded(e) = &events[1] else {
        panic!()
    };
    assert_eq!(e.header.previous_status, Some(MessageStatus::Delivered));
    assert_eq!(e.engagement, EngagementKind::Opened);
    assert!(e.first);
    assert_eq!(m.delivery_inferred(), Some(true));
    assert_eq!(m.engagement().opened_at, Some(t(4)));
}

#[test]
fn a_real_delivery_replaces_inferred_times_without_changing_status() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Clicked, "c", 8));
    let events = ok(&mut m, observe(K::Delivered, "d", 2));
    let d = delivered_event(&events);
    assert!(!d.inferred);
    assert_eq!(d.header.previous_status, Some(MessageStatus::Delivered));
    assert_eq!(d.header.status, MessageStatus::Delivered);
    assert_eq!(d.latency_ms_from_submit, Some(2 * 60_000));
    assert_eq!(m.delivered_at(), Some(t(2)));
    assert_eq!(m.delivery_inferred(), Some(false));
    assert_eq!(m.latency_ms_from_submit(), Some(2 * 60_000));
}

#[test]
fn engagement_after_delivery_records_only_engagement() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Delivered, "d", 2));
    let first = ok(&mut m, observe(K::Opened, "o1", 5));
    let second = ok(&mut m, observe(K::Opened, "o2", 3));
    assert_eq!(type_names(&first), ["EngagementRecorded"]);
    let flag = |events: &[MessageEvent]| match &events[0] {
        MessageEvent::EngagementRecorded(e) => e.first,
        other => panic!("{other:?}"),
    };
    assert!(flag(&first));
    assert!(!flag(&second));
    assert_eq!(m.engagement().opened_at, Some(t(3)));
    assert_eq!(m.last_engagement_at(), Some(t(5)));
    assert_eq!(m.delivered_at(), Some(t(2)));
}

#[test]
fn engagement_does_not_override_a_reported_failure() {
    let mut m = submitted(Channel::Sms);
    ok(&mut m, observe(K::Failed, "f", 2));
    let events = ok(&mut m, observe(K::Clicked, "c", 5));
    assert_eq!(
        type_names(&events),
        ["MessageDelivered", "EngagementRecorded"]
    );
    assert!(events.iter().all(|e| e.status() == MessageStatus::Failed));
    assert_eq!(m.status(), MessageStatus::Failed);
    assert!(m.engagement().has(EngagementKind::Clicked));
    assert_eq!(m.delivered_at(), Some(t(5)));
}

#[test]
fn engagement_overrides_expiry_and_soft_bounce() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, expire(3));
    ok(&mut m, observe(K::Opened, "o", 9));
    assert_eq!(m.status(), MessageStatus::Delivered);

    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::BouncedSoft, "s", 3));
    ok(&mut m, observe(K::Unsubscribed, "u", 9));
    assert_eq!(m.status(), MessageStatus::Delivered);
    assert!(m.engagement().has(EngagementKind::Unsubscribed));
}

// Rule 7.
#[test]
fn cancel_before_dispatch_then_repeat_is_a_no_op() {
    let mut m = submitted(Channel::Email);
    let events = ok(&mut m, cancel(2));
    assert_eq!(type_names(&events), ["MessageCancelled"]);
    assert_eq!(events[0].occurred_at(), t(2));
    assert_eq!(events[0].previous_status(), Some(MessageStatus::Queued));
    assert_eq!(m.status(), MessageStatus::Cancelled);
    assert_eq!(m.cancel_reason(), Some("changed my mind"));
    assert_eq!(run(&mut m, cancel(3)), Ok(vec![]));
    assert_eq!(m.cancelled_at(), Some(t(2)));
}

#[test]
fn cancel_a_scheduled_message() {
    let mut m = Message::default();
    let mut cmd = submit(Channel::Push);
    cmd.scheduled_at = Some(t(60));
    ok(&mut m, MessageCommand::Submit(cmd));
    ok(&mut m, cancel(1));
    assert_eq!(m.status(), MessageStatus::Cancelled);
}

#[test]
fn cancel_after_dispatch_is_a_rule_violation() {
    for (setup, status) in [
        (K::Dispatched, MessageStatus::Dispatched),
        (K::Deferred, MessageStatus::Deferred),
        (K::Delivered, MessageStatus::Delivered),
        (K::BouncedHard, MessageStatus::Bounced),
        (K::Failed, MessageStatus::Failed),
        (K::Dropped, MessageStatus::Dropped),
    ] {
        let mut m = submitted(Channel::Email);
        ok(&mut m, observe(setup, "s", 1));
        let err = run(&mut m, cancel(2)).unwrap_err();
        assert_eq!(err, MessageError::CancelAfterDispatch { status });
        assert_eq!(err.kind(), ErrorKind::RuleViolation);
    }
    let mut m = submitted(Channel::Email);
    ok(&mut m, expire(1));
    assert_eq!(run(&mut m, cancel(2)), Err(MessageError::CancelAfterExpiry));
}

#[test]
fn provider_evidence_supersedes_a_cancel_that_lost_the_race() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, cancel(2));
    let events = ok(&mut m, observe(K::Dispatched, "x", 1));
    assert_eq!(events[0].previous_status(), Some(MessageStatus::Cancelled));
    assert_eq!(m.status(), MessageStatus::Dispatched);
    ok(&mut m, observe(K::Delivered, "d", 3));
    assert_eq!(m.status(), MessageStatus::Delivered);
    assert_eq!(
        m.cancelled_at(),
        Some(t(2)),
        "the cancel request stays on record"
    );
}

#[test]
fn cancel_reason_is_validated() {
    let err = decide(
        &submitted(Channel::Email),
        MessageCommand::Cancel {
            reason: Some("x".repeat(501)),
            requested_at: t(1),
        },
    )
    .unwrap_err();
    assert_eq!(err.field(), Some("reason"));
}

// Rule 8.
#[test]
fn dispatch_attempts_increase_and_are_capped() {
    let mut m = submitted(Channel::Sms);
    for n in 1..=MAX_DISPATCH_ATTEMPTS {
        let events = ok(
            &mut m,
            observe(K::Dispatched, &format!("x{n}"), i64::from(n)),
        );
        let MessageEvent::MessageDispatched(e) = &events[0] else {
            panic!()
        };
        assert_eq!(e.attempt, n);
    }
    let err = run(&mut m, observe(K::Dispatched, "x-extra", 9)).unwrap_err();
    assert_eq!(err.code(), "dispatch_attempts_exhausted");
    assert_eq!(err.kind(), ErrorKind::RuleViolation);
    // A redelivered attempt is a duplicate, not a new attempt.
    assert_eq!(run(&mut m, observe(K::Dispatched, "x1", 1)), Ok(vec![]));
    assert_eq!(m.dispatch_attempts(), MAX_DISPATCH_ATTEMPTS);
    assert_eq!(m.dispatched_at(), Some(t(1)));
}

// Rule 9.
#[test]
fn expire_while_open() {
    let mut m = Message::default();
    let mut cmd = submit(Channel::Push);
    cmd.ttl_seconds = Some(600);
    ok(&mut m, MessageCommand::Submit(cmd));
    ok(&mut m, observe(K::Dispatched, "x", 1));
    let err = run(&mut m, expire(9)).unwrap_err();
    assert_eq!(
        err,
        MessageError::ExpireBeforeDeadline { expires_at: t(10) }
    );
    let events = ok(&mut m, expire(10));
    assert_eq!(type_names(&events), ["MessageExpired"]);
    assert_eq!(events[0].previous_status(), Some(MessageStatus::Dispatched));
    assert_eq!(m.status(), MessageStatus::Expired);
    assert_eq!(m.expired_at(), Some(t(10)));
    assert_eq!(run(&mut m, expire(11)), Ok(vec![]), "already expired");
}

#[test]
fn expire_after_an_outcome_or_cancel_is_a_no_op() {
    for setup in [
        observe(K::Delivered, "d", 1),
        cancel(1),
        observe(K::Dropped, "x", 1),
    ] {
        let mut m = submitted(Channel::Email);
        ok(&mut m, setup);
        let before = m.clone();
        assert_eq!(run(&mut m, expire(50)), Ok(vec![]));
        assert_eq!(m, before);
    }
}

#[test]
fn a_provider_outcome_after_expiry_replaces_it() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, expire(5));
    let events = ok(&mut m, observe(K::Delivered, "d", 9));
    assert_eq!(events[0].previous_status(), Some(MessageStatus::Expired));
    assert_eq!(m.status(), MessageStatus::Delivered);
    assert_eq!(m.expired_at(), Some(t(5)));
}

// Rule 10.
#[test]
fn latencies_use_provider_time_and_are_clamped() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Dispatched, "x", 2));
    let mut late = obs(K::Delivered, "d", 7);
    late.received_at = t(7) + Duration::hours(3);
    let events = ok(&mut m, MessageCommand::RecordObservation(late));
    let d = delivered_event(&events);
    assert_eq!(d.header.occurred_at, t(7));
    assert_eq!(d.header.received_at, t(7) + Duration::hours(3));
    assert_eq!(events[0].latency_ms_from_submit(), Some(7 * 60_000));
    assert_eq!(events[0].latency_ms_from_dispatch(), Some(5 * 60_000));

    // Provider clock slightly behind ours: occurred before submission, latency is 0.
    let mut m = submitted(Channel::Sms);
    let events = ok(&mut m, observe(K::Delivered, "d", -1));
    assert_eq!(events[0].latency_ms_from_submit(), Some(0));
}

#[test]
fn a_second_later_delivery_report_carries_no_latency() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Delivered, "d1", 3));
    let events = ok(&mut m, observe(K::Delivered, "d2", 8));
    assert_eq!(events[0].status(), MessageStatus::Delivered);
    assert!(!events[0].status_changed());
    assert_eq!(events[0].latency_ms_from_submit(), None);
    assert_eq!(m.delivered_at(), Some(t(3)));
}

#[test]
fn event_accessors_expose_the_header() {
    let mut m = submitted(Channel::Email);
    let events = ok(&mut m, observe(K::BouncedSoft, "s", 4));
    let e = &events[0];
    assert_eq!(e.tenant_id(), TENANT);
    assert_eq!(e.message_id(), MESSAGE);
    assert_eq!(e.channel(), Channel::Email);
    assert_eq!(e.provider(), "acme");
    assert_eq!(e.occurred_at(), t(4));
    assert_eq!(e.received_at(), t(4) + Duration::seconds(30));
    assert_eq!(e.dedupe_key(), Some("s"));
    assert_eq!(e.details(), Some(&serde_json::Value::Null));
    assert_eq!(e.latency_ms_from_submit(), None);
    assert_eq!(e.event_type(), "MessageBounced");
    assert_eq!(e.event_version(), crate::EVENT_VERSION);
    assert!(e.status_changed());
}

#[test]
fn aggregate_binding() {
    assert_eq!(Message::TYPE, "Message");
    // `handle` writes exactly what `decide` decides, through cqrs-es's own test harness.
    let given = submitted(Channel::Email);
    let stream = vec![decide(
        &Message::default(),
        MessageCommand::Submit(submit(Channel::Email)),
    )
    .unwrap()
    .remove(0)];
    let expected = decide(&given, observe(K::Opened, "o", 2)).unwrap();
    assert_eq!(expected.len(), 2);
    TestFramework::<Message>::with(())
        .given(stream.clone())
        .when(observe(K::Opened, "o", 2))
        .then_expect_events(expected);
    TestFramework::<Message>::with(())
        .given(stream)
        .when(observe(K::Dispatched, "", 2))
        .then_expect_error(MessageError::InvalidDedupeKey { reason: "empty" });
}

#[tokio::test]
async fn handle_applies_events_to_the_aggregate_as_it_writes_them() {
    let mut agg = Message::default();
    let sink = cqrs_es::event_sink::EventSink::default();
    agg.handle(MessageCommand::Submit(submit(Channel::Sms)), &(), &sink)
        .await
        .unwrap();
    agg.handle(observe(K::Clicked, "c", 1), &(), &sink)
        .await
        .unwrap();
    let events = sink.collect().await;
    assert_eq!(
        type_names(&events),
        ["MessageSubmitted", "MessageDelivered", "EngagementRecorded"]
    );
    assert_eq!(agg.status(), MessageStatus::Delivered);
    assert_eq!(agg, crate::replay(events));
}

#[test]
fn every_event_repeats_the_message_tags_for_per_tag_statistics() {
    let mut m = Message::default();
    let mut events = ok(&mut m, MessageCommand::Submit(submit(Channel::Email)));
    events.extend(ok(&mut m, observe(K::Dispatched, "d1", 1)));
    events.extend(ok(&mut m, observe(K::Opened, "o1", 3)));
    events.extend(ok(&mut m, observe(K::Delivered, "v1", 2)));
    assert!(events.len() >= 4, "{:?}", type_names(&events));
    for e in &events {
        assert_eq!(
            e.header().tags,
            vec!["welcome".to_string()],
            "{}",
            e.event_type()
        );
    }
}

#[test]
fn a_revised_delivery_moves_the_latency_sample_instead_of_adding_one() {
    use crate::{LatencyChange, LatencySample};
    // Submit at 0; an open at +60 infers delivery; then dispatched at +5 and delivered at
    // +10 arrive late. One sample per metric in the end: the reported delivery's.
    let mut m = submitted(Channel::Email);
    let opened = ok(&mut m, observe(K::Opened, "o", 60));
    let inferred = LatencySample {
        delivered_at: t(60),
        ms: 3_600_000,
    };
    assert_eq!(
        opened[0].header().submit_latency,
        Some(LatencyChange {
            before: None,
            after: Some(inferred)
        })
    );
    assert_eq!(
        opened[0].header().dispatch_latency,
        None,
        "no dispatch known yet"
    );
    assert_eq!(
        opened[1].header().submit_latency,
        None,
        "the engagement itself changes nothing"
    );

    let dispatched = ok(&mut m, observe(K::Dispatched, "d", 5));
    assert_eq!(dispatched[0].header().submit_latency, None);
    assert_eq!(
        dispatched[0].header().dispatch_latency,
        Some(LatencyChange {
            before: None,
            after: Some(LatencySample {
                delivered_at: t(60),
                ms: 3_300_000
            })
        })
    );

    let delivered = ok(&mut m, observe(K::Delivered, "v", 10));
    let reported = LatencySample {
        delivered_at: t(10),
        ms: 600_000,
    };
    assert_eq!(
        delivered[0].header().submit_latency,
        Some(LatencyChange {
            before: Some(inferred),
            after: Some(reported)
        })
    );
    assert_eq!(
        delivered[0].header().dispatch_latency,
        Some(LatencyChange {
            before: Some(LatencySample {
                delivered_at: t(60),
                ms: 3_300_000
            }),
            after: Some(LatencySample {
                delivered_at: t(10),
                ms: 300_000
            })
        })
    );
    assert_eq!(m.submit_latency(), Some(reported));
    assert_eq!(m.delivery_inferred(), Some(false));
}

#[test]
fn a_late_hard_bounce_takes_the_sample_out_and_a_soft_one_does_not() {
    let mut m = submitted(Channel::Email);
    ok(&mut m, observe(K::Dispatched, "d", 1));
    ok(&mut m, observe(K::Delivered, "v", 2));
    let sample = m.submit_latency().expect("delivered");
    let soft = ok(&mut m, observe(K::BouncedSoft, "s", 3));
    assert_eq!(soft[0].header().submit_latency, None);
    assert_eq!(m.status(), MessageStatus::Delivered);
    let hard = ok(&mut m, observe(K::BouncedHard, "h", 4));
    assert_eq!(m.status(), MessageStatus::Bounced);
    let change = hard[0].header().submit_latency.expect("the sample goes");
    assert_eq!((change.before, change.after), (Some(sample), None));
    assert!(hard[0].header().dispatch_latency.unwrap().after.is_none());
    assert_eq!(m.submit_latency(), None);
}
