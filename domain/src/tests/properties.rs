//! Properties over generated histories.

use std::cmp::Ordering;

use chrono::Duration;
use cqrs_es::{Aggregate, DomainEvent};
use proptest::prelude::*;
use proptest::sample::{select, Index};

use super::support::*;
use crate::rules::rule_terminal_order;
use crate::{
    decide, replay, Channel, Message, MessageCommand, MessageEvent, Observation, ObservationKind,
};

fn arb_channel() -> impl Strategy<Value = Channel> {
    select(Channel::ALL)
}

fn arb_kind() -> impl Strategy<Value = ObservationKind> {
    select(ObservationKind::ALL)
}

/// What happens to a message after its submission, in the order-independence property:
/// provider reports and Herald's own expiry (cancel is left out on purpose: whether it is
/// accepted depends on what arrived before it, by design of rule 7).
#[derive(Clone, Debug)]
enum Fact {
    Observed(Observation),
    Expired(i64),
}

impl Fact {
    fn minute_and_key(&self) -> (chrono::DateTime<chrono::Utc>, String) {
        match self {
            Fact::Observed(o) => (o.occurred_at, o.dedupe_key.clone()),
            Fact::Expired(m) => (t(*m), String::new()),
        }
    }

    fn command(&self) -> MessageCommand {
        match self {
            Fact::Observed(o) => MessageCommand::RecordObservation(o.clone()),
            Fact::Expired(m) => MessageCommand::Expire { at: t(*m) },
        }
    }
}

/// A set of distinct facts (unique dedupe keys, times from a narrow range so ties happen,
/// an expiry in about a third of the sets), and a shuffled sequence of the same set with
/// some of them repeated.
fn arb_fact_set() -> impl Strategy<Value = (Channel, Vec<Fact>, Vec<Fact>)> {
    (
        arb_channel(),
        prop::collection::vec((arb_kind(), 1i64..=20), 1..=10),
        prop::option::weighted(0.35, 1i64..=20),
        prop::collection::vec(any::<Index>(), 0..=8),
    )
        .prop_flat_map(|(channel, raw, expiry, dups)| {
            let mut set: Vec<Fact> = raw
                .iter()
                .enumerate()
                .map(|(i, (kind, minute))| Fact::Observed(obs(*kind, &format!("k{i}"), *minute)))
                .collect();
            set.extend(expiry.map(Fact::Expired));
            let mut sequence = set.clone();
            sequence.extend(dups.iter().map(|d| set[d.index(set.len())].clone()));
            (Just(channel), Just(set), Just(sequence).prop_shuffle())
        })
}

/// One step of a generated history.
#[derive(Clone, Debug)]
enum Step {
    /// An observation; keys come from a small pool so a key is sometimes reused with
    /// another kind or time (a duplicate report).
    Observe(ObservationKind, i64, u8),
    /// A dispatch report with a key of its own pool, so some histories exceed the attempt
    /// cap.
    Dispatch(i64, u8),
    Cancel(i64),
    Expire(i64),
    Resubmit {
        same_body: bool,
    },
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (arb_kind(), 1i64..=60, 0u8..12).prop_map(|(k, m, key)| Step::Observe(k, m, key)),
        3 => (1i64..=60, 0u8..24).prop_map(|(m, key)| Step::Dispatch(m, key)),
        2 => (0i64..=60).prop_map(Step::Cancel),
        2 => (0i64..=90).prop_map(Step::Expire),
        1 => any::<bool>().prop_map(|same_body| Step::Resubmit { same_body }),
    ]
}

/// A submit (channel, optional TTL, optional schedule) followed by up to 30 steps.
fn arb_history() -> impl Strategy<Value = Vec<MessageCommand>> {
    (
        arb_channel(),
        prop::option::of(select(&[60u32, 1800, 3600][..])),
        prop::option::of(1i64..=20),
        prop::collection::vec(arb_step(), 0..30),
    )
        .prop_map(|(channel, ttl, schedule, steps)| {
            let mut first = submit(channel);
            first.ttl_seconds = ttl;
            first.scheduled_at = schedule.map(t);
            let mut commands = vec![MessageCommand::Submit(first.clone())];
            for step in steps {
                commands.push(match step {
                    Step::Observe(kind, minute, key) => observe(kind, &format!("key{key}"), minute),
                    Step::Dispatch(minute, key) => observe(
                        ObservationKind::Dispatched,
                        &format!("dispatch{key}"),
                        minute,
                    ),
                    Step::Cancel(minute) => MessageCommand::Cancel {
                        reason: None,
                        requested_at: t(minute),
                    },
                    Step::Expire(minute) => MessageCommand::Expire { at: t(minute) },
                    Step::Resubmit { same_body } => {
                        let mut again = first.clone();
                        if !same_body {
                            again.request_fingerprint = "fp-other".into();
                        }
                        MessageCommand::Submit(again)
                    }
                });
            }
            commands
        })
}

/// Applies `facts` in order; returns the state and how many were refused. The only
/// refusal this generator can meet is a dispatch beyond the attempt cap.
fn apply_all(channel: Channel, facts: &[Fact]) -> (Message, usize) {
    let mut m = submitted(channel);
    let mut refused = 0;
    for f in facts {
        match run(&mut m, f.command()) {
            Ok(_) => {}
            Err(crate::MessageError::DispatchAttemptsExhausted { .. }) => refused += 1,
            Err(e) => panic!("{f:?} refused: {e}"),
        }
    }
    (m, refused)
}

proptest! {
    // Stated here so `scripts/test.sh` runs a known number of cases per property.
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// (a) Any permutation of a set of observations and an expiry, with duplicates, ends in
    /// the same status as the set applied in `occurred_at` order. The outcome claim,
    /// delivery evidence and engagement are order-independent too. (When an expiry was
    /// recorded is not: an expiry arriving after the outcome is a no-op.)
    #[test]
    fn any_order_ends_in_the_same_status((channel, set, sequence) in arb_fact_set()) {
        let mut in_time_order = set.clone();
        in_time_order.sort_by_key(Fact::minute_and_key);
        let (reference, refused_in_order) = apply_all(channel, &in_time_order);
        let (shuffled, _) = apply_all(channel, &sequence);
        prop_assert_eq!(shuffled.status(), reference.status());
        prop_assert_eq!(shuffled.outcome(), reference.outcome());
        prop_assert_eq!(shuffled.delivered_at(), reference.delivered_at());
        prop_assert_eq!(shuffled.delivery_inferred(), reference.delivery_inferred());
        prop_assert_eq!(shuffled.engagement(), reference.engagement());
        // Exactly the dispatches beyond the cap are refused, whatever the order; every
        // other distinct observation is recorded once.
        let observations = set.iter().filter(|f| matches!(f, Fact::Observed(_))).count();
        let refused = usize::from(refused_dispatches(&set));
        prop_assert_eq!(refused_in_order, refused);
        prop_assert_eq!(shuffled.observation_count(), observations - refused);
    }

    /// (b) The status rank never decreases; a change between two terminal statuses (the
    /// late-bounce exception among them) happens only when the new outcome beats the old
    /// one in the terminal order.
    #[test]
    fn status_rank_never_decreases(history in arb_history()) {
        let mut m = Message::default();
        for cmd in history {
            let before = m.clone();
            let Ok(events) = decide(&m, cmd) else { continue };
            for e in events {
                if let Some(prev) = e.previous_status() {
                    prop_assert!(e.status().rank() >= prev.rank(), "{:?}", e);
                }
                m.apply(e);
            }
            prop_assert!(m.status().rank() >= before.status().rank());
            if before.status().is_terminal() && m.status() != before.status() {
                let channel = m.channel().unwrap();
                let (old, new) = (before.outcome().unwrap(), m.outcome().unwrap());
                prop_assert_eq!(rule_terminal_order(channel, new, old), Ordering::Greater);
            }
        }
    }

    /// (c) Replaying the emitted events (also after a JSON round trip, as loading from the
    /// event store does) reproduces the state; after every event the recorded status is
    /// the one the facts imply; and cqrs-es `handle` produces the same events and state.
    #[test]
    fn replay_reproduces_the_state(history in arb_history()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut m = Message::default();
        let mut handled = Message::default();
        let mut stream = Vec::new();
        for cmd in history {
            let decided = decide(&m, cmd.clone());
            let sink = cqrs_es::event_sink::EventSink::default();
            let via_handle = runtime.block_on(async {
                handled.handle(cmd, &(), &sink).await.map(|_| ())
            });
            prop_assert_eq!(via_handle.is_ok(), decided.is_ok());
            let Ok(events) = decided else { continue };
            prop_assert_eq!(&runtime.block_on(sink.collect()), &events);
            for e in events {
                m.apply(e.clone());
                prop_assert_eq!(m.status(), m.status_from_facts());
                stream.push(e);
            }
            prop_assert_eq!(&handled, &m);
        }
        prop_assert_eq!(&replay(stream.clone()), &m);
        let from_json: Vec<MessageEvent> = stream
            .iter()
            .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
            .collect();
        prop_assert_eq!(&replay(from_json), &m);
        let state_json = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Message>(&state_json).unwrap(), &m);
    }

    /// (e) Taking each event's latency change out and in, over any history, leaves exactly
    /// the message's own sample of each metric: one per delivered message, never two, and
    /// none for a message that is not delivered. This is what lets a stateless read side
    /// count percentiles over messages rather than over reports.
    #[test]
    fn latency_changes_add_up_to_the_current_sample(history in arb_history()) {
        use std::collections::BTreeMap;
        type Key = (u8, chrono::DateTime<chrono::Utc>, i64);
        let mut counted: BTreeMap<Key, i64> = BTreeMap::new();
        let mut m = Message::default();
        for cmd in history {
            let Ok(events) = run(&mut m, cmd) else { continue };
            for e in events {
                for (metric, change) in [(0u8, e.header().submit_latency), (1, e.header().dispatch_latency)] {
                    let Some(change) = change else { continue };
                    prop_assert_ne!(change.before, change.after, "a change changes something");
                    if let Some(b) = change.before {
                        *counted.entry((metric, b.delivered_at, b.ms)).or_default() -= 1;
                    }
                    if let Some(a) = change.after {
                        *counted.entry((metric, a.delivered_at, a.ms)).or_default() += 1;
                    }
                }
            }
            counted.retain(|_, n| *n != 0);
            for (metric, sample) in [(0u8, m.submit_latency()), (1, m.dispatch_latency())] {
                let mine: Vec<(Key, i64)> = counted
                    .iter()
                    .filter(|((k, _, _), _)| *k == metric)
                    .map(|(k, n)| (*k, *n))
                    .collect();
                let want: Vec<(Key, i64)> = sample
                    .map(|s| ((metric, s.delivered_at, s.ms), 1))
                    .into_iter()
                    .collect();
                prop_assert_eq!(mine, want);
            }
        }
    }

    /// (d) Every event survives a serde round trip, is tagged by its event type, and
    /// carries the header flat in its payload.
    #[test]
    fn events_round_trip_through_serde(history in arb_history()) {
        let mut m = Message::default();
        for cmd in history {
            let Ok(events) = run(&mut m, cmd) else { continue };
            for e in events {
                let json = serde_json::to_value(&e).unwrap();
                let object = json.as_object().unwrap();
                prop_assert_eq!(object.len(), 1);
                let payload = &object[&e.event_type()];
                prop_assert_eq!(payload["status"].as_str(), Some(e.status().as_str()));
                prop_assert_eq!(payload["channel"].as_str(), Some(e.channel().as_str()));
                prop_assert!(payload["tenant_id"].is_string());
                prop_assert_eq!(e.event_version(), crate::EVENT_VERSION);
                let back: MessageEvent = serde_json::from_value(json).unwrap();
                prop_assert_eq!(back, e);
            }
        }
    }
}

/// How many dispatch observations of `set` exceed the attempt cap (whatever their order,
/// that many are refused).
fn refused_dispatches(set: &[Fact]) -> u8 {
    let dispatches = set
        .iter()
        .filter(|f| matches!(f, Fact::Observed(o) if o.kind == ObservationKind::Dispatched))
        .count();
    u8::try_from(dispatches.saturating_sub(crate::MAX_DISPATCH_ATTEMPTS as usize)).unwrap()
}

/// Whether `e` is a refusal the rules allow for `cmd` (of a history starting with `first`).
fn allowed_refusal(
    cmd: &MessageCommand,
    first: &crate::SubmitMessage,
    e: &crate::MessageError,
) -> bool {
    use crate::MessageError as E;
    match cmd {
        MessageCommand::RecordObservation(_) => matches!(
            e,
            E::DispatchAttemptsExhausted { .. } | E::ObservationLimitReached { .. }
        ),
        MessageCommand::Cancel { .. } => {
            matches!(e, E::CancelAfterDispatch { .. } | E::CancelAfterExpiry)
        }
        MessageCommand::Expire { .. } => matches!(e, E::ExpireBeforeDeadline { .. }),
        MessageCommand::Submit(s) => {
            s.request_fingerprint != first.request_fingerprint
                && matches!(e, E::IdempotencyKeyReused)
        }
    }
}

/// Over 1,000 generated histories, every refusal is one its command's rules allow (a
/// refusal for any other reason fails), and each kind of command is both accepted and
/// refused at least 20 times, so the history properties above, which step over refused commands,
/// are not passing on histories that are mostly refused.
#[test]
fn histories_accept_and_refuse_each_kind_of_command_for_a_reason() {
    use proptest::test_runner::{Config, TestRunner};
    use std::collections::BTreeMap;
    let mut runner = TestRunner::new(Config {
        cases: 1_000,
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(BTreeMap::<(&str, bool), u32>::new());
    runner
        .run(&arb_history(), |history| {
            let MessageCommand::Submit(first) = &history[0] else {
                unreachable!("histories start with a submit")
            };
            let mut m = Message::default();
            for cmd in &history {
                let kind = match cmd {
                    MessageCommand::Submit(_) => "submit",
                    MessageCommand::RecordObservation(_) => "observe",
                    MessageCommand::Cancel { .. } => "cancel",
                    MessageCommand::Expire { .. } => "expire",
                };
                let result = run(&mut m, cmd.clone());
                if let Err(e) = &result {
                    prop_assert!(allowed_refusal(cmd, first, e), "{cmd:?} refused: {e}");
                }
                *tally
                    .borrow_mut()
                    .entry((kind, result.is_ok()))
                    .or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    let tally = tally.into_inner();
    for kind in ["observe", "cancel", "expire", "submit"] {
        for accepted in [true, false] {
            let n = tally.get(&(kind, accepted)).copied().unwrap_or(0);
            assert!(
                n >= 20,
                "{kind} {}: only {n} in 1,000 histories ({tally:?})",
                if accepted { "accepted" } else { "refused" }
            );
        }
    }
}

#[test]
fn every_event_type_round_trips() {
    // A fixed history producing each of the ten event types at least once, so the serde
    // property cannot pass on a generator that happens to miss one.
    let mut m = Message::default();
    let mut first = submit(Channel::Email);
    first.ttl_seconds = Some(60);
    let mut stream = ok(&mut m, MessageCommand::Submit(first));
    let mut other = submitted(Channel::Sms);
    stream.extend(ok(
        &mut other,
        MessageCommand::Cancel {
            reason: Some("r".into()),
            requested_at: t(0),
        },
    ));
    for (kind, key, minute) in [
        (ObservationKind::Dispatched, "a", 1),
        (ObservationKind::Deferred, "b", 2),
        (ObservationKind::BouncedSoft, "c", 3),
    ] {
        stream.extend(ok(&mut m, observe(kind, key, minute)));
    }
    let mut expiring = submitted(Channel::Push);
    stream.extend(ok(&mut expiring, MessageCommand::Expire { at: t(5) }));
    stream.extend(ok(&mut m, observe(ObservationKind::Opened, "d", 4)));
    for (kind, key) in [
        (ObservationKind::Failed, "e"),
        (ObservationKind::Dropped, "f"),
    ] {
        stream.extend(ok(&mut m, observe(kind, key, 5)));
    }
    let mut types: Vec<String> = stream.iter().map(DomainEvent::event_type).collect();
    types.sort();
    types.dedup();
    let mut all: Vec<String> = MessageEvent::EVENT_TYPES
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.sort();
    assert_eq!(types, all);
    for e in stream {
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.starts_with(&format!("{{\"{}\":", e.event_type())));
        assert_eq!(serde_json::from_str::<MessageEvent>(&text).unwrap(), e);
    }
    // Times travel as RFC 3339 strings, the form the read side parses.
    let json = serde_json::to_value(MessageEvent::MessageExpired(crate::MessageExpired {
        header: crate::EventHeader {
            tenant_id: TENANT,
            message_id: MESSAGE,
            channel: Channel::Push,
            provider: "acme".into(),
            occurred_at: t(0) + Duration::milliseconds(5),
            received_at: t(0),
            status: crate::MessageStatus::Expired,
            previous_status: Some(crate::MessageStatus::Queued),
            tags: vec![],
            submit_latency: None,
            dispatch_latency: None,
        },
    }))
    .unwrap();
    assert_eq!(
        json["MessageExpired"]["occurred_at"],
        "2024-03-01T12:00:00.005Z"
    );
    assert_eq!(json["MessageExpired"]["previous_status"], "queued");
}
