//! Every (starting state, observation kind) pair, for email and SMS, with the incoming
//! observation later and earlier than the one that made the starting state.
//!
//! Cells: `QU SC CA DI DE DL BH BS FA DR EX` are the resulting status (`BH`/`BS`: bounced,
//! hard/soft); a trailing `+` means an inferred `MessageDelivered` precedes the
//! engagement event.

use cqrs_es::Aggregate;

use super::support::*;
use crate::{
    BounceKind, Channel, Message, MessageCommand, MessageEvent, MessageStatus, ObservationKind as K,
};

/// Column order of the tables.
const KINDS: [K; 11] = [
    K::Dispatched,
    K::Deferred,
    K::Delivered,
    K::BouncedHard,
    K::BouncedSoft,
    K::Failed,
    K::Dropped,
    K::Opened,
    K::Clicked,
    K::Complained,
    K::Unsubscribed,
];

/// Row order of the tables: how the starting state is reached (its observation, if any,
/// happens at minute 10).
const STARTS: [&str; 12] = [
    "queued",
    "scheduled",
    "cancelled",
    "dispatched",
    "deferred",
    "delivered",
    "delivered_inferred",
    "bounced_hard",
    "bounced_soft",
    "failed",
    "dropped",
    "expired",
];

const START_MINUTE: i64 = 10;
const LATER: i64 = 20;
const EARLIER: i64 = 5;

fn start(channel: Channel, name: &str) -> Message {
    let mut m = Message::default();
    let mut cmd = submit(channel);
    if name == "scheduled" {
        cmd.scheduled_at = Some(t(60));
    }
    ok(&mut m, MessageCommand::Submit(cmd));
    let kind = match name {
        "queued" | "scheduled" => None,
        "cancelled" => {
            ok(
                &mut m,
                MessageCommand::Cancel {
                    reason: None,
                    requested_at: t(1),
                },
            );
            None
        }
        "expired" => {
            ok(
                &mut m,
                MessageCommand::Expire {
                    at: t(START_MINUTE),
                },
            );
            None
        }
        "dispatched" => Some(K::Dispatched),
        "deferred" => Some(K::Deferred),
        "delivered" => Some(K::Delivered),
        "delivered_inferred" => Some(K::Opened),
        "bounced_hard" => Some(K::BouncedHard),
        "bounced_soft" => Some(K::BouncedSoft),
        "failed" => Some(K::Failed),
        "dropped" => Some(K::Dropped),
        other => panic!("unknown start {other}"),
    };
    if let Some(kind) = kind {
        ok(&mut m, observe(kind, "start", START_MINUTE));
    }
    m
}

/// Decodes a cell into (status, bounce kind, inferred delivery emitted).
fn decode(cell: &str) -> (MessageStatus, Option<BounceKind>, bool) {
    let inferred = cell.ends_with('+');
    let (status, bounce) = match cell.trim_end_matches('+') {
        "QU" => (MessageStatus::Queued, None),
        "SC" => (MessageStatus::Scheduled, None),
        "CA" => (MessageStatus::Cancelled, None),
        "DI" => (MessageStatus::Dispatched, None),
        "DE" => (MessageStatus::Deferred, None),
        "DL" => (MessageStatus::Delivered, None),
        "BH" => (MessageStatus::Bounced, Some(BounceKind::Hard)),
        "BS" => (MessageStatus::Bounced, Some(BounceKind::Soft)),
        "FA" => (MessageStatus::Failed, None),
        "DR" => (MessageStatus::Dropped, None),
        "EX" => (MessageStatus::Expired, None),
        other => panic!("bad cell {other}"),
    };
    (status, bounce, inferred)
}

fn primary_event(kind: K) -> &'static str {
    match kind {
        K::Dispatched => "MessageDispatched",
        K::Deferred => "MessageDeferred",
        K::Delivered => "MessageDelivered",
        K::BouncedHard | K::BouncedSoft => "MessageBounced",
        K::Failed => "MessageFailed",
        K::Dropped => "MessageDropped",
        K::Opened | K::Clicked | K::Complained | K::Unsubscribed => "EngagementRecorded",
    }
}

fn check_table(channel: Channel, minute: i64, table: [&str; 12]) {
    let mut failures = Vec::new();
    for (row, start_name) in table.iter().zip(STARTS) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), KINDS.len(), "row {start_name}");
        for (cell, kind) in cells.iter().zip(KINDS) {
            let (want_status, want_bounce, want_inferred) = decode(cell);
            let mut m = start(channel, start_name);
            let before = m.status();
            let events = ok(&mut m, observe(kind, "incoming", minute));
            let got_inferred = events.len() == 2;
            let mut expected_types = Vec::new();
            if want_inferred {
                expected_types.push("MessageDelivered");
            }
            expected_types.push(primary_event(kind));

            let chain_ok = events
                .iter()
                .scan(before, |prev, e| {
                    let ok = e.previous_status() == Some(*prev);
                    *prev = e.status();
                    Some(ok)
                })
                .all(|ok| ok);
            let inferred_flag_ok = !want_inferred
                || matches!(&events[0], MessageEvent::MessageDelivered(d) if d.inferred);
            let replay_ok = {
                let mut again = start(channel, start_name);
                for e in &events {
                    again.apply(e.clone());
                }
                again == m
            };
            if m.status() != want_status
                || m.bounce() != want_bounce
                || got_inferred != want_inferred
                || type_names(&events) != expected_types
                || events.last().map(MessageEvent::status) != Some(want_status)
                || !chain_ok
                || !inferred_flag_ok
                || !replay_ok
            {
                failures.push(format!(
                    "{channel} {start_name} + {kind}@{minute}: want {cell}, got {} {:?} {:?}",
                    m.status(),
                    m.bounce(),
                    type_names(&events)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn email_incoming_later() {
    check_table(
        Channel::Email,
        LATER,
        [
            // dispatched deferred delivered hard soft failed dropped opened clicked complained unsubscribed
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // queued
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // scheduled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // cancelled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // dispatched
            "DE DE DL BH BS FA DR DL+ DL+ DL+ DL+", // deferred
            "DL DL DL BH DL DL DL DL  DL  DL  DL ", // delivered
            "DL DL DL BH DL FA DR DL  DL  DL  DL ", // delivered_inferred
            "BH BH BH BH BH BH BH BH+ BH+ BH+ BH+", // bounced_hard
            "BS BS DL BH BS FA DR DL+ DL+ DL+ DL+", // bounced_soft
            "FA FA FA BH FA FA FA FA+ FA+ FA+ FA+", // failed
            "DR DR DR BH DR DR DR DR+ DR+ DR+ DR+", // dropped
            "EX EX DL BH BS FA DR DL+ DL+ DL+ DL+", // expired
        ],
    );
}

#[test]
fn email_incoming_earlier() {
    check_table(
        Channel::Email,
        EARLIER,
        [
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // queued
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // scheduled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // cancelled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // dispatched
            "DE DE DL BH BS FA DR DL+ DL+ DL+ DL+", // deferred
            "DL DL DL BH DL FA DR DL  DL  DL  DL ", // delivered
            "DL DL DL BH DL FA DR DL+ DL+ DL+ DL+", // delivered_inferred
            "BH BH BH BH BH BH BH BH+ BH+ BH+ BH+", // bounced_hard
            "BS BS DL BH BS FA DR DL+ DL+ DL+ DL+", // bounced_soft
            "FA FA DL BH FA FA DR FA+ FA+ FA+ FA+", // failed
            "DR DR DL BH DR FA DR DR+ DR+ DR+ DR+", // dropped
            "EX EX DL BH BS FA DR DL+ DL+ DL+ DL+", // expired
        ],
    );
}

#[test]
fn sms_incoming_later() {
    check_table(
        Channel::Sms,
        LATER,
        [
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // queued
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // scheduled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // cancelled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // dispatched
            "DE DE DL BH BS FA DR DL+ DL+ DL+ DL+", // deferred
            "DL DL DL DL DL DL DL DL  DL  DL  DL ", // delivered
            "DL DL DL BH DL FA DR DL  DL  DL  DL ", // delivered_inferred
            "BH BH BH BH BH BH BH BH+ BH+ BH+ BH+", // bounced_hard
            "BS BS DL BH BS FA DR DL+ DL+ DL+ DL+", // bounced_soft
            "FA FA FA FA FA FA FA FA+ FA+ FA+ FA+", // failed
            "DR DR DR DR DR DR DR DR+ DR+ DR+ DR+", // dropped
            "EX EX DL BH BS FA DR DL+ DL+ DL+ DL+", // expired
        ],
    );
}

#[test]
fn sms_incoming_earlier() {
    check_table(
        Channel::Sms,
        EARLIER,
        [
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // queued
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // scheduled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // cancelled
            "DI DE DL BH BS FA DR DL+ DL+ DL+ DL+", // dispatched
            "DE DE DL BH BS FA DR DL+ DL+ DL+ DL+", // deferred
            "DL DL DL BH DL FA DR DL  DL  DL  DL ", // delivered
            "DL DL DL BH DL FA DR DL+ DL+ DL+ DL+", // delivered_inferred
            "BH BH DL BH BH FA DR BH+ BH+ BH+ BH+", // bounced_hard
            "BS BS DL BH BS FA DR DL+ DL+ DL+ DL+", // bounced_soft
            "FA FA DL BH FA FA DR FA+ FA+ FA+ FA+", // failed
            "DR DR DL BH DR FA DR DR+ DR+ DR+ DR+", // dropped
            "EX EX DL BH BS FA DR DL+ DL+ DL+ DL+", // expired
        ],
    );
}

#[test]
fn push_behaves_like_sms() {
    // Push has no late-bounce exception either; spot-check the cells where email differs.
    for (start_name, kind, minute, want) in [
        ("delivered", K::BouncedHard, LATER, MessageStatus::Delivered),
        (
            "bounced_hard",
            K::Delivered,
            EARLIER,
            MessageStatus::Delivered,
        ),
        ("failed", K::BouncedHard, LATER, MessageStatus::Failed),
    ] {
        let mut m = start(Channel::Push, start_name);
        ok(&mut m, observe(kind, "incoming", minute));
        assert_eq!(m.status(), want, "{start_name} + {kind}");
    }
}

#[test]
fn starting_states_are_what_the_rows_say() {
    let want = [
        "QU", "SC", "CA", "DI", "DE", "DL", "DL+", "BH", "BS", "FA", "DR", "EX",
    ];
    for (name, cell) in STARTS.iter().zip(want) {
        let (status, bounce, inferred) = decode(cell);
        let m = start(Channel::Email, name);
        assert_eq!(m.status(), status, "{name}");
        assert_eq!(m.bounce(), bounce, "{name}");
        assert_eq!(m.delivery_inferred() == Some(true), inferred, "{name}");
    }
}
