//! The traffic of one message as a provider would produce it: a submit, then observations
//! after provider-like delays, some duplicated, some out of order.

use std::time::Duration;

use serde_json::{json, Value};

/// xorshift64*: reproducible randomness without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Share of each channel, in percent.
#[derive(Debug, Clone, Copy)]
pub struct ChannelMix {
    /// Email share.
    pub email: u64,
    /// SMS share.
    pub sms: u64,
    /// Push share (the rest).
    pub push: u64,
}

impl Default for ChannelMix {
    /// Email 60 %, SMS 30 %, push 10 %.
    fn default() -> Self {
        Self {
            email: 60,
            sms: 30,
            push: 10,
        }
    }
}

impl ChannelMix {
    /// Parses `email=60,sms=30,push=10`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut mix = Self {
            email: 0,
            sms: 0,
            push: 0,
        };
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("expected channel=percent, got {part:?}"))?;
            let v: u64 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a percentage"))?;
            match k.trim() {
                "email" => mix.email = v,
                "sms" => mix.sms = v,
                "push" => mix.push = v,
                other => return Err(format!("unknown channel {other:?}")),
            }
        }
        if mix.email + mix.sms + mix.push != 100 {
            return Err("channel shares must add up to 100".into());
        }
        Ok(mix)
    }
}

/// What to send next for a message: a path relative to the command service and a body,
/// after a delay from the message's submit.
#[derive(Debug, Clone)]
pub struct Step {
    /// Delay after the submit was accepted.
    pub after: Duration,
    /// Observation body (the message id is known only once submitted).
    pub observation: Value,
}

/// A generated message: its submit body and the observations that will follow.
#[derive(Debug, Clone)]
pub struct MessagePlan {
    /// `POST /v1/messages` body.
    pub submit: Value,
    /// Observations in the order they will be sent (possibly out of time order).
    pub steps: Vec<Step>,
}

/// Generates one message's traffic. `duplicate_pct` of reports are sent twice,
/// `reorder_pct` of messages get two reports swapped.
pub fn message(
    rng: &mut Rng,
    mix: ChannelMix,
    seq: u64,
    duplicate_pct: u64,
    reorder_pct: u64,
    time_scale: f64,
) -> MessagePlan {
    let roll = rng.below(100);
    let (channel, recipient, provider) = if roll < mix.email {
        (
            "email",
            format!("user{}@example.com", seq % 100_000),
            ["ses", "sendgrid"][rng.below(2) as usize],
        )
    } else if roll < mix.email + mix.sms {
        ("sms", format!("+1415555{:04}", seq % 10_000), "twilio")
    } else {
        ("push", format!("fcm:token-{seq}"), "fcm")
    };
    let tags: Vec<&str> = ["welcome", "billing", "promo"]
        .into_iter()
        .filter(|_| rng.chance(30))
        .collect();
    let submit = json!({
        "channel": channel,
        "recipient": recipient,
        "provider": provider,
        "content": {"type": "template", "template_id": "tmpl-1", "variables": {"n": seq}},
        "tags": tags,
    });
    let ms = |v: f64| Duration::from_micros((v * 1000.0 * time_scale) as u64);
    let now = chrono::Utc::now();
    let obs = |kind: &str, key: String, after: Duration| Step {
        after,
        observation: json!({
            "kind": kind,
            "dedupe_key": key,
            "occurred_at": (now + chrono::Duration::from_std(after).unwrap_or_default()).to_rfc3339(),
        }),
    };
    let id = format!("{seq:x}-{:x}", rng.next_u64());
    let dispatch = ms(50.0 + rng.below(200) as f64);
    let mut steps = vec![obs("dispatched", format!("{id}-d"), dispatch)];
    let outcome_at = dispatch + ms(300.0 + rng.below(3_000) as f64);
    match rng.below(100) {
        0..=2 => steps.push(obs("bounced_hard", format!("{id}-b"), outcome_at)),
        3..=4 => steps.push(obs("failed", format!("{id}-f"), outcome_at)),
        5 => steps.push(obs("deferred", format!("{id}-q"), outcome_at)),
        _ => {
            steps.push(obs("delivered", format!("{id}-v"), outcome_at));
            if channel == "email" && rng.chance(40) {
                let opened = outcome_at + ms(1_000.0 + rng.below(10_000) as f64);
                steps.push(obs("opened", format!("{id}-o"), opened));
                if rng.chance(25) {
                    steps.push(obs("clicked", format!("{id}-c"), opened + ms(500.0)));
                }
            }
        }
    }
    if rng.chance(reorder_pct) && steps.len() >= 2 {
        // The later report arrives first; the earlier one keeps its own occurred_at.
        let (a, b) = (steps[0].after, steps[1].after);
        steps[0].after = b;
        steps[1].after = a;
    }
    let dups: Vec<Step> = steps
        .iter()
        .filter(|_| rng.chance(duplicate_pct))
        .cloned()
        .map(|mut s| {
            s.after += ms(20.0);
            s
        })
        .collect();
    steps.extend(dups);
    steps.sort_by_key(|s| s.after);
    MessagePlan { submit, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_reproducible_and_realistic() {
        let mix = ChannelMix::parse("email=60,sms=30,push=10").unwrap();
        let a = message(&mut Rng(7), mix, 1, 20, 20, 1.0);
        let b = message(&mut Rng(7), mix, 1, 20, 20, 1.0);
        assert_eq!(a.submit, b.submit);
        assert_eq!(a.steps.len(), b.steps.len());
        let mut rng = Rng(99);
        let plans: Vec<_> = (0..500)
            .map(|i| message(&mut rng, mix, i, 20, 20, 1.0))
            .collect();
        let dupes = plans.iter().filter(|p| {
            let keys: Vec<&str> = p
                .steps
                .iter()
                .map(|s| s.observation["dedupe_key"].as_str().unwrap())
                .collect();
            let mut unique = keys.clone();
            unique.sort_unstable();
            unique.dedup();
            unique.len() < keys.len()
        });
        assert!(dupes.count() > 50, "duplicates are generated");
        let emails = plans
            .iter()
            .filter(|p| p.submit["channel"] == "email")
            .count();
        assert!(
            (250..350).contains(&emails),
            "{emails} of 500 are email at a 60% share"
        );
        assert!(ChannelMix::parse("email=60,sms=30").is_err());
    }
}
