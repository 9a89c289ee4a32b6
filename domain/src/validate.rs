//! Input checks that depend on nothing but the command itself.
//!
//! They run before any state is consulted, so a malformed request is always
//! [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) whatever the message's history.
//! The checks are deliberately plausible rather than exhaustive: the provider is the final
//! judge of an address, Herald only refuses what can never work.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::command::{Observation, SubmitMessage};
use crate::error::MessageError;
use crate::types::{Channel, MessageContent};

/// Longest email address (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest email local part (RFC 5321).
pub const MAX_EMAIL_LOCAL_LEN: usize = 64;
/// Fewest digits after `+` in a phone number (shortest real E.164 numbers).
pub const MIN_PHONE_DIGITS: usize = 8;
/// Most digits after `+` in a phone number (E.164).
pub const MAX_PHONE_DIGITS: usize = 15;
/// Longest push token (web push endpoints are URLs; APNs and FCM tokens are far shorter).
pub const MAX_PUSH_TOKEN_LEN: usize = 4096;
/// Longest provider name.
pub const MAX_PROVIDER_LEN: usize = 64;
/// Most tags per message.
pub const MAX_TAGS: usize = 20;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 64;
/// Longest time-to-live: 30 days. Providers keep retrying for days at most, so a longer
/// TTL would never fire before some outcome is known.
pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;
/// Furthest a message can be scheduled ahead: 30 days, which keeps the scheduler's horizon
/// (and the window in which a scheduled message can still be cancelled) bounded.
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::days(30);
/// Longest subject, in characters (RFC 5322 line limit).
pub const MAX_SUBJECT_CHARS: usize = 998;
/// Largest email body, in bytes. Bodies live in the event store, so keep them modest.
pub const MAX_EMAIL_BODY_BYTES: usize = 256 * 1024;
/// Longest SMS body, in characters (Twilio's limit for a concatenated message).
pub const MAX_SMS_BODY_CHARS: usize = 1600;
/// Largest push body, in bytes (APNs payload limit).
pub const MAX_PUSH_BODY_BYTES: usize = 4096;
/// Longest template id.
pub const MAX_TEMPLATE_ID_LEN: usize = 128;
/// Largest template variables object, serialized, in bytes.
pub const MAX_TEMPLATE_VARIABLES_BYTES: usize = 64 * 1024;
/// Longest request fingerprint (a hex or base64 digest fits easily).
pub const MAX_FINGERPRINT_LEN: usize = 128;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Longest provider dedupe key, in characters.
pub const MAX_DEDUPE_KEY_CHARS: usize = 256;
/// Largest observation details object, serialized, in bytes.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;
/// Longest cancel reason, in characters.
pub const MAX_CANCEL_REASON_CHARS: usize = 500;
/// Clock difference tolerated between a provider and Herald before a time is implausible.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(15);

/// Checks every field of a submit command.
pub fn validate_submit(cmd: &SubmitMessage) -> Result<(), MessageError> {
    validate_recipient(cmd.channel, &cmd.recipient)?;
    validate_provider(&cmd.provider)?;
    validate_content(cmd.channel, &cmd.content)?;
    validate_tags(&cmd.tags)?;
    if let Some(ttl) = cmd.ttl_seconds {
        validate_ttl(ttl)?;
    }
    if let Some(at) = cmd.scheduled_at {
        validate_schedule(cmd.submitted_at, at)?;
    }
    validate_fingerprint(&cmd.request_fingerprint)
}

/// Checks the parts of an observation that need no state: dedupe key, details, and that
/// it did not happen after Herald received it (beyond [`MAX_CLOCK_SKEW`]).
pub fn validate_observation(obs: &Observation) -> Result<(), MessageError> {
    validate_dedupe_key(&obs.dedupe_key)?;
    validate_details(&obs.details)?;
    if obs.occurred_at > obs.received_at + MAX_CLOCK_SKEW {
        return Err(MessageError::InvalidOccurredAt {
            reason: "later than the time it was received",
        });
    }
    Ok(())
}

/// Checks the recipient against the channel's syntax.
pub fn validate_recipient(channel: Channel, recipient: &str) -> Result<(), MessageError> {
    let check = match channel {
        Channel::Email => check_email(recipient),
        Channel::Sms => check_phone(recipient),
        Channel::Push => check_push_token(recipient),
    };
    check.map_err(|reason| MessageError::InvalidRecipient { channel, reason })
}

/// `local@domain`, with a sane local part and a domain of hostname labels.
///
/// Quoted local parts and IP literals are refused (no ESP accepts them from an API).
/// The domain needs no dot, so intranet and test hosts such as `localhost` work.
fn check_email(addr: &str) -> Result<(), &'static str> {
    if addr.len() > MAX_EMAIL_LEN {
        return Err("longer than 254 bytes");
    }
    let (local, domain) = addr.split_once('@').ok_or("missing @")?;
    if local.is_empty() {
        return Err("empty local part");
    }
    if local.len() > MAX_EMAIL_LOCAL_LEN {
        return Err("local part longer than 64 bytes");
    }
    let forbidden = |c: char| c.is_control() || c.is_whitespace() || "\"(),:;<>@[\\]".contains(c);
    if local.chars().any(forbidden) {
        return Err("local part has a forbidden character");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("local part has a misplaced dot");
    }
    if domain.is_empty() {
        return Err("empty domain");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("domain has an empty label");
        }
        if label.len() > 63 {
            return Err("domain label longer than 63 bytes");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with a hyphen");
        }
        // Alphanumeric includes non-ASCII letters: internationalized domains are valid.
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err("domain has a forbidden character");
        }
    }
    Ok(())
}

/// E.164: `+`, then 8 to 15 digits, the first not zero (no country code starts with 0).
fn check_phone(number: &str) -> Result<(), &'static str> {
    let digits = number.strip_prefix('+').ok_or("must start with +")?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("only digits may follow +");
    }
    if !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits.len()) {
        return Err("must have 8 to 15 digits");
    }
    if digits.starts_with('0') {
        return Err("country code cannot start with 0");
    }
    Ok(())
}

/// Non-empty printable ASCII without spaces: APNs tokens are hex, FCM tokens base64url with
/// `:`, web push endpoints URLs; none contains anything else.
fn check_push_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("empty token");
    }
    if token.len() > MAX_PUSH_TOKEN_LEN {
        return Err("longer than 4096 bytes");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces");
    }
    Ok(())
}

/// `[a-z0-9_-]{1,64}`: provider names become metric labels and read-model keys.
pub fn validate_provider(provider: &str) -> Result<(), MessageError> {
    let invalid = |reason| Err(MessageError::InvalidProvider { reason });
    if provider.is_empty() {
        return invalid("empty");
    }
    if provider.len() > MAX_PROVIDER_LEN {
        return invalid("longer than 64 characters");
    }
    if !provider
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return invalid("only a-z, 0-9, _ and - are allowed");
    }
    Ok(())
}

/// At most [`MAX_TAGS`] distinct tags, each `[A-Za-z0-9_.:-]{1,64}`.
///
/// Duplicates are refused rather than silently merged, so the stored tags are exactly what
/// the client sent.
pub fn validate_tags(tags: &[String]) -> Result<(), MessageError> {
    if tags.len() > MAX_TAGS {
        return Err(MessageError::TooManyTags {
            count: tags.len(),
            max: MAX_TAGS,
        });
    }
    for (index, tag) in tags.iter().enumerate() {
        let invalid = |reason| Err(MessageError::InvalidTag { index, reason });
        if tag.is_empty() {
            return invalid("empty");
        }
        if tag.len() > MAX_TAG_LEN {
            return invalid("longer than 64 characters");
        }
        if !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
        {
            return invalid("only A-Z, a-z, 0-9, _ . : and - are allowed");
        }
        if tags[..index].contains(tag) {
            return invalid("duplicate");
        }
    }
    Ok(())
}

/// `1..=`[`MAX_TTL_SECONDS`]: a zero TTL would expire the message before it could be sent.
pub fn validate_ttl(ttl_seconds: u32) -> Result<(), MessageError> {
    if ttl_seconds == 0 {
        return Err(MessageError::InvalidTtl {
            reason: "must be positive",
        });
    }
    if ttl_seconds > MAX_TTL_SECONDS {
        return Err(MessageError::InvalidTtl {
            reason: "at most 30 days (2592000 seconds)",
        });
    }
    Ok(())
}

/// At most [`MAX_SCHEDULE_AHEAD`] after submission. A time in the past is accepted and
/// means "now": the client's clock may lag ours.
pub fn validate_schedule(
    submitted_at: DateTime<Utc>,
    scheduled_at: DateTime<Utc>,
) -> Result<(), MessageError> {
    if scheduled_at > submitted_at + MAX_SCHEDULE_AHEAD {
        return Err(MessageError::InvalidSchedule {
            reason: "at most 30 days ahead",
        });
    }
    Ok(())
}

/// Non-empty, bounded content that makes sense on the channel.
pub fn validate_content(channel: Channel, content: &MessageContent) -> Result<(), MessageError> {
    let invalid = |field, reason| Err(MessageError::InvalidContent { field, reason });
    match content {
        MessageContent::Inline { subject, body } => {
            if let Some(subject) = subject {
                if channel == Channel::Sms {
                    return invalid("content.subject", "sms messages have no subject");
                }
                if subject.trim().is_empty() {
                    return invalid("content.subject", "empty");
                }
                if subject.chars().count() > MAX_SUBJECT_CHARS {
                    return invalid("content.subject", "longer than 998 characters");
                }
                // A line break in a subject is header injection on email.
                if subject.chars().any(char::is_control) {
                    return invalid("content.subject", "has control characters");
                }
            }
            if body.trim().is_empty() {
                return invalid("content.body", "empty");
            }
            let too_long = match channel {
                Channel::Email => body.len() > MAX_EMAIL_BODY_BYTES,
                Channel::Sms => body.chars().count() > MAX_SMS_BODY_CHARS,
                Channel::Push => body.len() > MAX_PUSH_BODY_BYTES,
            };
            if too_long {
                return invalid("content.body", "too long for the channel");
            }
        }
        MessageContent::Template {
            template_id,
            variables,
        } => {
            if template_id.is_empty() {
                return invalid("content.template_id", "empty");
            }
            if template_id.len() > MAX_TEMPLATE_ID_LEN {
                return invalid("content.template_id", "longer than 128 characters");
            }
            if !template_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            {
                return invalid(
                    "content.template_id",
                    "only A-Z, a-z, 0-9, _ . : and - are allowed",
                );
            }
            if json_len(&Value::Object(variables.clone())) > MAX_TEMPLATE_VARIABLES_BYTES {
                return invalid("content.variables", "larger than 64 KiB");
            }
        }
    }
    Ok(())
}

/// Non-empty printable ASCII, at most [`MAX_FINGERPRINT_LEN`]. The service computes it, so
/// a failure here is a service bug surfacing as a 400 rather than a silent replay match.
pub fn validate_fingerprint(fingerprint: &str) -> Result<(), MessageError> {
    let invalid = |reason| Err(MessageError::InvalidFingerprint { reason });
    if fingerprint.is_empty() {
        return invalid("empty");
    }
    if fingerprint.len() > MAX_FINGERPRINT_LEN {
        return invalid("longer than 128 characters");
    }
    if !fingerprint.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid("must be printable ASCII");
    }
    Ok(())
}

/// Checks a client's `Idempotency-Key` before [`crate::message_id_for`] turns it into an id:
/// 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] printable ASCII characters (it travels in a header).
pub fn validate_idempotency_key(key: &str) -> Result<(), MessageError> {
    let invalid = |reason| Err(MessageError::InvalidIdempotencyKey { reason });
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return invalid("longer than 255 characters");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return invalid("must be printable ASCII without spaces");
    }
    Ok(())
}

/// `1..=`[`MAX_DEDUPE_KEY_CHARS`] characters without control characters. Keys are stored
/// per message, so their size bounds the aggregate's size.
pub fn validate_dedupe_key(key: &str) -> Result<(), MessageError> {
    let invalid = |reason| Err(MessageError::InvalidDedupeKey { reason });
    if key.is_empty() {
        return invalid("empty");
    }
    if key.chars().count() > MAX_DEDUPE_KEY_CHARS {
        return invalid("longer than 256 characters");
    }
    if key.chars().any(char::is_control) {
        return invalid("has control characters");
    }
    Ok(())
}

/// A JSON object or null, at most [`MAX_DETAILS_BYTES`] serialized. Details are stored in
/// the event, so their size is bounded like everything else in it.
pub fn validate_details(details: &Value) -> Result<(), MessageError> {
    match details {
        Value::Null => Ok(()),
        Value::Object(_) if json_len(details) <= MAX_DETAILS_BYTES => Ok(()),
        Value::Object(_) => Err(MessageError::InvalidDetails {
            reason: "larger than 16 KiB",
        }),
        _ => Err(MessageError::InvalidDetails {
            reason: "must be a JSON object or null",
        }),
    }
}

/// At most [`MAX_CANCEL_REASON_CHARS`] characters, no control characters except line
/// breaks and tabs (it is free text, shown back to people).
pub fn validate_cancel_reason(reason: &str) -> Result<(), MessageError> {
    let invalid = |why| Err(MessageError::InvalidCancelReason { reason: why });
    if reason.chars().count() > MAX_CANCEL_REASON_CHARS {
        return invalid("longer than 500 characters");
    }
    if reason
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return invalid("has control characters");
    }
    Ok(())
}

fn json_len(value: &Value) -> usize {
    // Serializing a Value cannot fail (keys are strings); usize::MAX makes an impossible
    // failure count as too large rather than pass.
    serde_json::to_vec(value).map_or(usize::MAX, |v| v.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code(r: Result<(), MessageError>) -> &'static str {
        r.err().map_or("ok", |e| e.code())
    }

    #[test]
    fn email_recipients() {
        let ok = [
            "a@b.co",
            "first.last+tag@example.com",
            "ops@localhost",
            "x@sub-domain.example.org",
            "ünïcode@bücher.de",
            "o'brien@example.ie",
        ];
        for r in ok {
            assert_eq!(code(validate_recipient(Channel::Email, r)), "ok", "{r}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b".repeat(250));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let bad = [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@@example.com",
            "a@b@example.com",
            "a b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "\"q\"@example.com",
            "a@example..com",
            "a@example.com.",
            "a@-example.com",
            "a@exa_mple.com",
            "a@[127.0.0.1]",
            "a@exa mple.com",
            "a\n@example.com",
            long_local.as_str(),
            long_total.as_str(),
            long_label.as_str(),
        ];
        for r in bad {
            let err = validate_recipient(Channel::Email, r).unwrap_err();
            assert_eq!(err.code(), "invalid_recipient", "{r}");
            assert_eq!(err.field(), Some("recipient"));
        }
    }

    #[test]
    fn sms_recipients_are_e164() {
        for r in [
            "+14155550123",
            "+33612345678",
            "+12345678",
            "+123456789012345",
        ] {
            assert_eq!(code(validate_recipient(Channel::Sms, r)), "ok", "{r}");
        }
        for r in [
            "",
            "14155550123",
            "+1234567",
            "+1234567890123456",
            "+0123456789",
            "+1 415 555 0123",
            "+1415555012a",
            "++14155550123",
        ] {
            assert_eq!(
                code(validate_recipient(Channel::Sms, r)),
                "invalid_recipient",
                "{r}"
            );
        }
    }

    #[test]
    fn push_tokens() {
        let max = "a".repeat(MAX_PUSH_TOKEN_LEN);
        for r in [
            "a",
            "fcm:APA91bH-x_y",
            "https://push.example.com/abc?x=1",
            max.as_str(),
        ] {
            assert_eq!(code(validate_recipient(Channel::Push, r)), "ok");
        }
        let too_long = "a".repeat(MAX_PUSH_TOKEN_LEN + 1);
        for r in ["", "has space", "tab\t", "é", too_long.as_str()] {
            assert_eq!(
                code(validate_recipient(Channel::Push, r)),
                "invalid_recipient",
                "{r:?}"
            );
        }
    }

    #[test]
    fn providers() {
        for p in ["ses", "sendgrid", "twilio_v2", "fcm-eu", &"a".repeat(64)] {
            assert_eq!(code(validate_provider(p)), "ok", "{p}");
        }
        for p in ["", "SES", "ses.eu", "ses eu", &"a".repeat(65)] {
            assert_eq!(code(validate_provider(p)), "invalid_provider", "{p}");
        }
    }

    #[test]
    fn tags() {
        let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            code(validate_tags(&s(&[
                "welcome",
                "A.b:c-d_e",
                &"x".repeat(64)
            ]))),
            "ok"
        );
        assert_eq!(code(validate_tags(&[])), "ok");
        let twenty: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        assert_eq!(code(validate_tags(&twenty)), "ok");
        let twenty_one: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert_eq!(code(validate_tags(&twenty_one)), "too_many_tags");
        for bad in [&["ok", ""][..], &["a b"], &["x/y"], &["dup", "dup"], &["é"]] {
            assert_eq!(code(validate_tags(&s(bad))), "invalid_tag", "{bad:?}");
        }
        assert_eq!(
            validate_tags(&s(&["ok", "ok2", "bad tag"])),
            Err(MessageError::InvalidTag {
                index: 2,
                reason: "only A-Z, a-z, 0-9, _ . : and - are allowed"
            })
        );
        assert_eq!(code(validate_tags(&s(&[&"x".repeat(65)]))), "invalid_tag");
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(code(validate_ttl(0)), "invalid_ttl");
        assert_eq!(code(validate_ttl(1)), "ok");
        assert_eq!(code(validate_ttl(MAX_TTL_SECONDS)), "ok");
        assert_eq!(code(validate_ttl(MAX_TTL_SECONDS + 1)), "invalid_ttl");
    }

    #[test]
    fn schedule_bounds() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(code(validate_schedule(now, now - Duration::days(1))), "ok");
        assert_eq!(code(validate_schedule(now, now + MAX_SCHEDULE_AHEAD)), "ok");
        assert_eq!(
            code(validate_schedule(
                now,
                now + MAX_SCHEDULE_AHEAD + Duration::seconds(1)
            )),
            "invalid_scheduled_at"
        );
    }

    #[test]
    fn inline_content() {
        let inline = |subject: Option<&str>, body: &str| MessageContent::Inline {
            subject: subject.map(str::to_owned),
            body: body.to_owned(),
        };
        let field = |channel, c: &MessageContent| {
            validate_content(channel, c)
                .err()
                .and_then(|e| e.field())
                .unwrap_or("ok")
        };
        assert_eq!(field(Channel::Email, &inline(Some("Hi"), "Body")), "ok");
        assert_eq!(field(Channel::Email, &inline(None, "Body")), "ok");
        assert_eq!(field(Channel::Push, &inline(Some("Title"), "Body")), "ok");
        assert_eq!(field(Channel::Sms, &inline(None, "Body")), "ok");
        assert_eq!(
            field(Channel::Sms, &inline(Some("Hi"), "Body")),
            "content.subject"
        );
        assert_eq!(
            field(Channel::Email, &inline(Some(" "), "Body")),
            "content.subject"
        );
        assert_eq!(
            field(Channel::Email, &inline(Some("a\r\nBcc: x"), "Body")),
            "content.subject"
        );
        let long_subject = "s".repeat(MAX_SUBJECT_CHARS + 1);
        assert_eq!(
            field(Channel::Email, &inline(Some(&long_subject), "Body")),
            "content.subject"
        );
        assert_eq!(field(Channel::Email, &inline(None, "  \n")), "content.body");
        let sms_max = "é".repeat(MAX_SMS_BODY_CHARS);
        assert_eq!(field(Channel::Sms, &inline(None, &sms_max)), "ok");
        assert_eq!(
            field(Channel::Sms, &inline(None, &format!("{sms_max}x"))),
            "content.body"
        );
        let push_over = "p".repeat(MAX_PUSH_BODY_BYTES + 1);
        assert_eq!(
            field(Channel::Push, &inline(None, &push_over)),
            "content.body"
        );
        assert_eq!(field(Channel::Email, &inline(None, &push_over)), "ok");
        let email_over = "e".repeat(MAX_EMAIL_BODY_BYTES + 1);
        assert_eq!(
            field(Channel::Email, &inline(None, &email_over)),
            "content.body"
        );
    }

    #[test]
    fn template_content() {
        let template = |id: &str, vars: Value| MessageContent::Template {
            template_id: id.to_owned(),
            variables: vars.as_object().cloned().unwrap(),
        };
        let field = |c: &MessageContent| {
            validate_content(Channel::Email, c)
                .err()
                .and_then(|e| e.field())
                .unwrap_or("ok")
        };
        assert_eq!(field(&template("welcome.v2", json!({"name": "Ada"}))), "ok");
        assert_eq!(field(&template("", json!({}))), "content.template_id");
        assert_eq!(field(&template("a b", json!({}))), "content.template_id");
        assert_eq!(
            field(&template(&"t".repeat(129), json!({}))),
            "content.template_id"
        );
        let big = "v".repeat(MAX_TEMPLATE_VARIABLES_BYTES);
        assert_eq!(
            field(&template("t", json!({ "k": big }))),
            "content.variables"
        );
    }

    #[test]
    fn dedupe_keys() {
        assert_eq!(code(validate_dedupe_key("sg_evt_1")), "ok");
        assert_eq!(code(validate_dedupe_key(&"é".repeat(256))), "ok");
        assert_eq!(code(validate_dedupe_key("")), "invalid_dedupe_key");
        assert_eq!(
            code(validate_dedupe_key(&"k".repeat(257))),
            "invalid_dedupe_key"
        );
        assert_eq!(code(validate_dedupe_key("a\0b")), "invalid_dedupe_key");
    }

    #[test]
    fn details() {
        assert_eq!(code(validate_details(&Value::Null)), "ok");
        assert_eq!(code(validate_details(&json!({"reason": "550"}))), "ok");
        for bad in [json!([1]), json!("s"), json!(1), json!(true)] {
            assert_eq!(code(validate_details(&bad)), "invalid_details", "{bad}");
        }
        let big = json!({ "k": "x".repeat(MAX_DETAILS_BYTES) });
        assert_eq!(code(validate_details(&big)), "invalid_details");
    }

    #[test]
    fn fingerprints_and_idempotency_keys() {
        assert_eq!(code(validate_fingerprint("sha256:abc")), "ok");
        assert_eq!(
            code(validate_fingerprint("")),
            "invalid_request_fingerprint"
        );
        assert_eq!(
            code(validate_fingerprint(&"f".repeat(129))),
            "invalid_request_fingerprint"
        );
        assert_eq!(
            code(validate_fingerprint("a b")),
            "invalid_request_fingerprint"
        );
        assert_eq!(code(validate_idempotency_key("order-42")), "ok");
        assert_eq!(
            code(validate_idempotency_key("")),
            "invalid_idempotency_key"
        );
        assert_eq!(
            code(validate_idempotency_key(&"k".repeat(256))),
            "invalid_idempotency_key"
        );
        assert_eq!(
            code(validate_idempotency_key("a\tb")),
            "invalid_idempotency_key"
        );
    }

    #[test]
    fn cancel_reasons() {
        assert_eq!(code(validate_cancel_reason("")), "ok");
        assert_eq!(code(validate_cancel_reason("user asked\nto stop")), "ok");
        assert_eq!(code(validate_cancel_reason("bell\u{7}")), "invalid_reason");
        assert_eq!(
            code(validate_cancel_reason(&"r".repeat(501))),
            "invalid_reason"
        );
    }

    #[test]
    fn observation_time_must_not_be_after_receipt() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let obs = |occurred_at| Observation {
            kind: crate::ObservationKind::Delivered,
            dedupe_key: "k".into(),
            occurred_at,
            received_at: now,
            details: Value::Null,
        };
        assert_eq!(code(validate_observation(&obs(now + MAX_CLOCK_SKEW))), "ok");
        assert_eq!(
            code(validate_observation(&obs(now - Duration::days(2)))),
            "ok"
        );
        assert_eq!(
            code(validate_observation(&obs(now
                + MAX_CLOCK_SKEW
                + Duration::seconds(1)))),
            "invalid_occurred_at"
        );
    }
}
