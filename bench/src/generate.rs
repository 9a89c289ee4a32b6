//! The data generator: millions of realistic events written straight into the event store
//! with COPY (decided by the real domain, so every payload is one the command service could
//! have stored), spread over a time window. The read models are then built by the rebuild
//! path, never through HTTP.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use domain::{
    Channel, Message, MessageCommand, MessageContent, Observation, ObservationKind, SubmitMessage,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::workload::Rng;

/// Rows per COPY (one transaction each).
const COPY_ROWS: usize = 50_000;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Roughly how many events.
    pub events: usize,
    /// The tenant owning them.
    pub tenant: Uuid,
    /// Window end; messages are submitted uniformly over `days` before it.
    pub end: DateTime<Utc>,
    /// Window length in days.
    pub days: i64,
    /// Writers in parallel.
    pub writers: usize,
}

fn observe(kind: ObservationKind, key: String, at: DateTime<Utc>) -> MessageCommand {
    MessageCommand::RecordObservation(Observation {
        kind,
        dedupe_key: key,
        occurred_at: at,
        received_at: at + Duration::seconds(2),
        details: serde_json::Value::Null,
    })
}

/// The commands of one message: submit, dispatch, an outcome, sometimes opens and clicks.
fn lifecycle(rng: &mut Rng, tenant: Uuid, id: Uuid, t0: DateTime<Utc>) -> Vec<MessageCommand> {
    let roll = rng.below(100);
    let (channel, recipient, provider) = if roll < 60 {
        (
            Channel::Email,
            "user@example.com",
            ["ses", "sendgrid"][rng.below(2) as usize],
        )
    } else if roll < 90 {
        (Channel::Sms, "+14155550123", "twilio")
    } else {
        (Channel::Push, "fcm:token", "fcm")
    };
    let tags: Vec<String> = ["welcome", "billing", "promo"]
        .iter()
        .filter(|_| rng.chance(25))
        .map(|t| t.to_string())
        .collect();
    let mut cmds = vec![MessageCommand::Submit(SubmitMessage {
        tenant_id: tenant,
        message_id: id,
        channel,
        recipient: recipient.into(),
        provider: provider.into(),
        content: MessageContent::Template {
            template_id: "welcome-v2".into(),
            variables: serde_json::Map::from_iter([("name".to_string(), serde_json::json!("Ada"))]),
        },
        tags,
        scheduled_at: None,
        ttl_seconds: None,
        submitted_at: t0,
        request_fingerprint: "generated".into(),
    })];
    let dispatched = t0 + Duration::milliseconds(50 + rng.below(500) as i64);
    cmds.push(observe(
        ObservationKind::Dispatched,
        format!("{id}-d"),
        dispatched,
    ));
    // Delivery latency: log-normal-ish, most within seconds, a long tail to minutes.
    let spread = [300, 800, 1_500, 3_000, 8_000, 30_000, 120_000][rng.below(7) as usize];
    let outcome_at = dispatched + Duration::milliseconds(100 + rng.below(spread) as i64);
    match rng.below(100) {
        0..=2 => cmds.push(observe(
            ObservationKind::BouncedHard,
            format!("{id}-b"),
            outcome_at,
        )),
        3..=4 => cmds.push(observe(
            ObservationKind::Failed,
            format!("{id}-f"),
            outcome_at,
        )),
        5..=6 => {}
        _ => {
            cmds.push(observe(
                ObservationKind::Delivered,
                format!("{id}-v"),
                outcome_at,
            ));
            if channel == Channel::Email && rng.chance(35) {
                let opened = outcome_at + Duration::seconds(5 + rng.below(3_600) as i64);
                cmds.push(observe(ObservationKind::Opened, format!("{id}-o"), opened));
                if rng.chance(20) {
                    cmds.push(observe(
                        ObservationKind::Clicked,
                        format!("{id}-c"),
                        opened + Duration::seconds(20),
                    ));
                }
            }
        }
    }
    cmds
}

fn csv_field(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// Writes about `spec.events` events; returns how many were written.
pub async fn generate(db_url: &str, spec: &Spec) -> anyhow::Result<usize> {
    let started = Instant::now();
    let per_writer = spec.events / spec.writers.max(1);
    let mut tasks = Vec::new();
    for w in 0..spec.writers.max(1) {
        let url = db_url.to_string();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await?;
            let mut rng = Rng(0x5eed_0000 + w as u64);
            let window_ms = spec.days * 86_400_000;
            let start = spec.end - Duration::days(spec.days);
            let metadata = format!(
                "{{\"correlation_id\":\"generated\",\"causation_id\":\"generated\",\"traceparent\":\"00-{}-00f067aa0ba902b7-01\",\"tenant_id\":\"{}\",\"received_at\":\"{}\"}}",
                Uuid::new_v4().simple(),
                spec.tenant,
                spec.end.to_rfc3339()
            );
            let mut written = 0usize;
            let mut buf = String::with_capacity(COPY_ROWS * 700);
            let mut rows = 0usize;
            while written < per_writer {
                let id = Uuid::new_v4();
                let t0 = start + Duration::milliseconds(rng.below(window_ms as u64 - 600_000) as i64);
                let mut state = Message::default();
                let mut seq = 0;
                for cmd in lifecycle(&mut rng, spec.tenant, id, t0) {
                    for event in domain::decide(&state, cmd).map_err(|e| anyhow::anyhow!("{e}"))? {
                        seq += 1;
                        buf.push_str("Message,");
                        buf.push_str(&id.to_string());
                        buf.push(',');
                        buf.push_str(&seq.to_string());
                        buf.push(',');
                        buf.push_str(event.type_name());
                        buf.push_str(",1,");
                        csv_field(&mut buf, &serde_json::to_string(&event)?);
                        buf.push(',');
                        csv_field(&mut buf, &metadata);
                        buf.push('\n');
                        rows += 1;
                        written += 1;
                        cqrs_es::Aggregate::apply(&mut state, event);
                    }
                }
                if rows >= COPY_ROWS || written >= per_writer {
                    let mut copy = conn
                        .copy_in_raw("COPY events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) FROM STDIN WITH (FORMAT csv)")
                        .await?;
                    copy.send(buf.as_bytes()).await?;
                    copy.finish().await?;
                    buf.clear();
                    rows = 0;
                }
            }
            anyhow::Ok(written)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    eprintln!(
        "generate: {total} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(total)
}
