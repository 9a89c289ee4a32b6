//! A hostile client against the running services: every row is a request a careless or
//! malicious client might send, with the exact status and error code it must get. At the
//! end every service is still ready, nothing panicked, and each service's peak memory is
//! within its documented bound.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};
use system_tests::{bins, System};

/// Peak resident memory the query service may reach under any mix of requests
/// (docs/query-api.md, "Limits").
const QUERY_PEAK_MIB: u64 = 300;
/// Peak resident memory the command service may reach under any mix of requests
/// (docs/command-api.md, "Limits").
const COMMAND_PEAK_MIB: u64 = 400;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Svc {
    Command,
    Query,
}

#[derive(Clone, Debug)]
enum Auth {
    Mine,
    Other,
    None,
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Row {
    name: &'static str,
    svc: Svc,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    auth: Auth,
    status: u16,
    code: Option<&'static str>,
}

fn row(name: &'static str, svc: Svc, method: Method, path: impl Into<String>) -> Row {
    Row {
        name,
        svc,
        method,
        path: path.into(),
        content_type: None,
        body: None,
        headers: Vec::new(),
        auth: Auth::Mine,
        status: 0,
        code: None,
    }
}

impl Row {
    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = Some(serde_json::to_vec(&body).unwrap());
        self
    }
    fn raw(mut self, content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = content_type;
        self.body = Some(body.into());
        self
    }
    fn text(self, body: &str) -> Self {
        self.raw(Some("application/json"), body.as_bytes().to_vec())
    }
    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
    fn expect(mut self, status: u16, code: &'static str) -> Self {
        self.status = status;
        self.code = Some(code);
        self
    }
    fn ok(mut self, status: u16) -> Self {
        self.status = status;
        self.code = None;
        self
    }
}

fn email() -> Value {
    json!({"channel": "email", "recipient": "ada@example.com", "provider": "ses",
           "content": {"type": "inline", "subject": "Hi", "body": "Hello"}})
}

fn template(variables: &str) -> String {
    format!(
        r#"{{"channel":"email","recipient":"ada@example.com","provider":"ses","content":{{"type":"template","template_id":"t1","variables":{variables}}}}}"#
    )
}

fn observation(kind: &str, key: &str) -> Value {
    json!({"kind": kind, "dedupe_key": key, "occurred_at": chrono::Utc::now().to_rfc3339()})
}

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

struct Ctx {
    sys: System,
    mine_key: String,
    other_key: String,
}

impl Ctx {
    async fn send(&self, r: &Row) -> Result<(u16, Value, reqwest::header::HeaderMap), String> {
        let base = match r.svc {
            Svc::Command => &self.sys.command,
            Svc::Query => &self.sys.query,
        };
        let mut req = self
            .sys
            .client
            .request(r.method.clone(), base.url(&r.path))
            .timeout(Duration::from_secs(60));
        match &r.auth {
            Auth::Mine => req = req.bearer_auth(&self.mine_key),
            Auth::Other => req = req.bearer_auth(&self.other_key),
            Auth::None => {}
            Auth::Raw(v) => {
                req = req.header("authorization", HeaderValue::from_bytes(v).unwrap());
            }
        }
        if let Some(ct) = r.content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in &r.headers {
            req = req.header(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        if let Some(b) = &r.body {
            req = req.body(b.clone());
        }
        let response = req.send().await.map_err(|e| format!("no answer: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("body cut: {e}"))?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| {
            format!(
                "answer is not JSON: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )
        })?;
        Ok((status, body, headers))
    }

    async fn submit(&self, key: &str, body: &str) -> Value {
        let r = self
            .sys
            .client
            .post(self.sys.command.url("/v1/messages"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        r.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_exact_json_errors_and_leave_every_service_ready_and_bounded() {
    let sys = System::start(bins!(), &[]).await;
    let (_, mine_key) = sys.tenant("hostile").await;
    let (_, other_key) = sys.tenant("bystander").await;
    let ctx = Ctx {
        sys,
        mine_key,
        other_key,
    };

    // State the rows refer to: a message of mine, one of the other tenant, and seed data
    // for the statistics rows (20 tags, three channels).
    let mine = ctx.submit(&ctx.mine_key, &email().to_string()).await;
    let mine_id = mine["message_id"].as_str().unwrap().to_string();
    let theirs = ctx.submit(&ctx.other_key, &email().to_string()).await;
    let theirs_id = theirs["message_id"].as_str().unwrap().to_string();
    let tags: Vec<String> = (0..20).map(|i| format!("tag{i}")).collect();
    let mut seed = email();
    seed["tags"] = json!(tags);
    ctx.submit(&ctx.mine_key, &seed.to_string()).await;
    for body in [
        json!({"channel": "sms", "recipient": "+4915112345678", "provider": "twilio", "content": {"type": "inline", "body": "x"}}),
        json!({"channel": "push", "recipient": "fcm:abc", "provider": "fcm", "content": {"type": "inline", "body": "x"}}),
    ] {
        ctx.submit(&ctx.mine_key, &body.to_string()).await;
    }

    let obs = format!("/v1/messages/{mine_id}/observations");
    let cancel = format!("/v1/messages/{mine_id}/cancel");
    let day = chrono::Utc::now();
    let since = |days: i64| {
        (day - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:00:00Z")
            .to_string()
    };
    let big_body = "x".repeat(600 * 1024);
    let huge_uri = format!("/v1/stats/messages?tag={}", "a".repeat(10 * 1024));
    let c = Svc::Command;
    let q = Svc::Query;
    use Method as M;

    let mut rows = vec![
        // Bodies of the wrong JSON type.
        row("submit []", c, M::POST, "/v1/messages").text("[]").expect(400, "invalid_body"),
        row("submit string", c, M::POST, "/v1/messages").text("\"x\"").expect(400, "invalid_body"),
        row("submit null", c, M::POST, "/v1/messages").text("null").expect(400, "invalid_body"),
        row("submit number", c, M::POST, "/v1/messages").text("42").expect(400, "invalid_body"),
        row("submit positional array", c, M::POST, "/v1/messages")
            .text(r#"["email","ada@example.com","ses",{"type":"inline","body":"x"}]"#)
            .expect(400, "invalid_body"),
        row("content as array", c, M::POST, "/v1/messages")
            .text(r#"{"channel":"email","recipient":"ada@example.com","provider":"ses","content":["inline",null,"x"]}"#)
            .expect(400, "invalid_body"),
        row("truncated JSON", c, M::POST, "/v1/messages").text("{\"channel\":").expect(400, "malformed_json"),
        row("empty body", c, M::POST, "/v1/messages").text("").expect(400, "malformed_json"),
        row("trailing garbage", c, M::POST, "/v1/messages")
            .text(&format!("{} x", email()))
            .expect(400, "malformed_json"),
        row("invalid UTF-8", c, M::POST, "/v1/messages")
            .raw(Some("application/json"), b"{\"channel\":\"\xff\xfe\"}".to_vec())
            .expect(400, "malformed_json"),
        row("lone surrogate", c, M::POST, "/v1/messages")
            .text(r#"{"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"\ud800"}}"#)
            .expect(400, "malformed_json"),
        // NUL anywhere jsonb would store it.
        row("NUL in body", c, M::POST, "/v1/messages")
            .text(r#"{"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"a\u0000b"}}"#)
            .expect(400, "unsupported_character"),
        row("NUL in variable key", c, M::POST, "/v1/messages")
            .text(&template(r#"{"k\u0000":"v"}"#))
            .expect(400, "unsupported_character"),
        row("NUL in variable value", c, M::POST, "/v1/messages")
            .text(&template(r#"{"k":["ok","v\u0000"]}"#))
            .expect(400, "unsupported_character"),
        row("NUL in tag", c, M::POST, "/v1/messages")
            .text(r#"{"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"x"},"tags":["a\u0000"]}"#)
            .expect(400, "unsupported_character"),
        row("NUL in observation details", c, M::POST, &obs)
            .json(json!({"kind":"opened","dedupe_key":"n1","occurred_at":day.to_rfc3339(),"details":{"ua":"a\u{0}b"}}))
            .expect(400, "unsupported_character"),
        row("NUL in cancel reason", c, M::POST, &cancel)
            .json(json!({"reason": "a\u{0}"}))
            .expect(400, "unsupported_character"),
        // Numbers at the edges of what doubles and jsonb hold.
        row("number out of range", c, M::POST, "/v1/messages")
            .text(&template(r#"{"x":1e400}"#))
            .expect(400, "malformed_json"),
        row("largest double", c, M::POST, "/v1/messages")
            .text(&template(r#"{"x":1.7976931348623157e308,"y":-1.7976931348623157e308}"#))
            .ok(202),
        row("smallest subnormal and negative zero", c, M::POST, "/v1/messages")
            .text(&template(r#"{"x":5e-324,"y":-0.0,"z":123456789012345678901234567890}"#))
            .ok(202),
        row("largest double in details", c, M::POST, &obs)
            .text(&format!(r#"{{"kind":"dispatched","dedupe_key":"big1","occurred_at":"{}","details":{{"n":1.7976931348623157e308}}}}"#, day.to_rfc3339()))
            .ok(202),
        // Nesting and repetition.
        row("33 levels of nesting", c, M::POST, "/v1/messages")
            .text(&template(&format!(r#"{{"x":{}}}"#, nested(31))))
            .expect(400, "too_deep"),
        row("5000 levels of nesting", c, M::POST, "/v1/messages")
            .text(&template(&format!(r#"{{"x":{}}}"#, nested(5000))))
            .expect(400, "too_deep"),
        row("30 levels are fine", c, M::POST, "/v1/messages")
            .text(&template(&format!(r#"{{"x":{}}}"#, nested(27))))
            .ok(202),
        row("duplicate top-level key", c, M::POST, "/v1/messages")
            .text(r#"{"channel":"email","channel":"sms","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"x"}}"#)
            .expect(400, "duplicate_key"),
        row("duplicate variable key", c, M::POST, "/v1/messages")
            .text(&template(r#"{"a":1,"a":2}"#))
            .expect(400, "duplicate_key"),
        // Field-level mistakes.
        row("unknown field", c, M::POST, "/v1/messages")
            .json(json!({"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"x"},"tenant_id":"x"}))
            .expect(400, "invalid_body"),
        row("recipient of the wrong type", c, M::POST, "/v1/messages")
            .json(json!({"channel":"email","recipient":5,"provider":"ses","content":{"type":"inline","body":"x"}}))
            .expect(400, "invalid_body"),
        row("control characters in subject", c, M::POST, "/v1/messages")
            .json(json!({"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","subject":"a\r\nBcc: x","body":"x"}}))
            .expect(400, "invalid_content"),
        row("ttl below range", c, M::POST, "/v1/messages")
            .json(json!({"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"x"},"ttl_seconds":-1}))
            .expect(400, "invalid_body"),
        row("ttl of 2^64", c, M::POST, "/v1/messages")
            .text(r#"{"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"x"},"ttl_seconds":18446744073709551616}"#)
            .expect(400, "invalid_body"),
        row("scheduled in year 99999", c, M::POST, "/v1/messages")
            .json(json!({"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"x"},"scheduled_at":"+99999-01-01T00:00:00Z"}))
            .expect(400, "invalid_scheduled_at"),
        row("21 tags", c, M::POST, "/v1/messages")
            .json(json!({"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":"x"},"tags":(0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()}))
            .expect(400, "too_many_tags"),
        row("unknown observation kind", c, M::POST, &obs)
            .json(observation("exploded", "k1"))
            .expect(400, "invalid_body"),
        row("observation time not a time", c, M::POST, &obs)
            .json(json!({"kind":"opened","dedupe_key":"k2","occurred_at":"yesterday"}))
            .expect(400, "invalid_body"),
        row("observation details as array", c, M::POST, &obs)
            .json(json!({"kind":"opened","dedupe_key":"k3","occurred_at":day.to_rfc3339(),"details":[1]}))
            .expect(400, "invalid_details"),
        row("dedupe key of 1000 characters", c, M::POST, &obs)
            .json(observation("opened", &"k".repeat(1000)))
            .expect(400, "invalid_dedupe_key"),
        row("observation as array", c, M::POST, &obs)
            .text(r#"["opened","k4","2026-01-01T00:00:00Z"]"#)
            .expect(400, "invalid_body"),
        // Size, type and method.
        row("body over 512 KiB", c, M::POST, "/v1/messages")
            .json(json!({"channel":"email","recipient":"ada@example.com","provider":"ses","content":{"type":"inline","body":big_body}}))
            .expect(413, "payload_too_large"),
        row("cancel body over 512 KiB", c, M::POST, &cancel)
            .json(json!({"reason": big_body}))
            .expect(413, "payload_too_large"),
        row("text/plain body", c, M::POST, "/v1/messages")
            .raw(Some("text/plain"), email().to_string())
            .expect(415, "unsupported_media_type"),
        row("no content type", c, M::POST, "/v1/messages")
            .raw(None, email().to_string())
            .expect(415, "unsupported_media_type"),
        row("GET on the submit route", c, M::GET, "/v1/messages").expect(405, "method_not_allowed"),
        row("DELETE on cancel", c, M::DELETE, &cancel).expect(405, "method_not_allowed"),
        row("unknown route", c, M::GET, "/v2/everything").expect(404, "route_not_found"),
        row("URI over 8 KiB", c, M::POST, format!("/v1/messages?{}", "a".repeat(9000)))
            .json(email())
            .expect(414, "uri_too_long"),
        row("65 headers", c, M::POST, "/v1/messages")
            .json(email())
            .expect(431, "headers_too_large"),
        row("a 70 KiB header", c, M::POST, "/v1/messages")
            .json(email())
            .header("x-filler", "f".repeat(70 * 1024))
            .expect(431, "headers_too_large"),
        // Cancel bodies.
        row("cancel []", c, M::POST, &cancel).text("[]").expect(400, "invalid_body"),
        row("cancel string", c, M::POST, &cancel).text("\"stop\"").expect(400, "invalid_body"),
        row("cancel other tenant's message", c, M::POST, format!("/v1/messages/{theirs_id}/cancel"))
            .expect(404, "message_not_found"),
        row("cancel not a uuid", c, M::POST, "/v1/messages/../../etc/cancel").expect(404, "route_not_found"),
        row("observe other tenant's message", c, M::POST, format!("/v1/messages/{theirs_id}/observations"))
            .json(observation("opened", "x1"))
            .expect(404, "message_not_found"),
        row("observe not a uuid", c, M::POST, "/v1/messages/nope/observations")
            .json(observation("opened", "x1"))
            .expect(404, "not_found"),
        // Batches.
        row("batch of none", c, M::POST, "/v1/batch").json(json!({"commands": []})).expect(400, "invalid_field"),
        row("batch of 1001", c, M::POST, "/v1/batch")
            .json(json!({"commands": (0..1001).map(|_| json!({"op":"cancel","message_id":mine_id})).collect::<Vec<_>>()}))
            .expect(400, "invalid_field"),
        row("batch as array", c, M::POST, "/v1/batch").text("[]").expect(400, "invalid_body"),
        row("batch with duplicate keys", c, M::POST, "/v1/batch")
            .text(r#"{"commands":[],"commands":[]}"#)
            .expect(400, "duplicate_key"),
        // Authentication.
        row("no Authorization", c, M::POST, "/v1/messages").json(email()).auth(Auth::None).expect(401, "unauthorized"),
        row("Basic scheme", c, M::POST, "/v1/messages").json(email()).auth(Auth::Raw(b"Basic dXNlcjpwYXNz".to_vec())).expect(401, "unauthorized"),
        row("non-ASCII Authorization", c, M::POST, "/v1/messages").json(email()).auth(Auth::Raw(b"Bearer \xe9\xe9".to_vec())).expect(401, "unauthorized"),
        row("key of 10 KiB", c, M::POST, "/v1/messages").json(email()).auth(Auth::Raw(format!("Bearer {}", "k".repeat(10_000)).into_bytes())).expect(401, "unauthorized"),
        row("non-ASCII Idempotency-Key", c, M::POST, "/v1/messages").json(email()).header("idempotency-key", b"k\xe9y".to_vec()).expect(400, "invalid_field"),
        row("Idempotency-Key of 300 characters", c, M::POST, "/v1/messages").json(email()).header("idempotency-key", "k".repeat(300)).expect(400, "invalid_idempotency_key"),
        row("garbage X-Request-Id and traceparent are ignored", c, M::POST, "/v1/messages")
            .json(email())
            .header("x-request-id", "bad id with spaces and \u{e9}".as_bytes().to_vec())
            .header("traceparent", "00-zz-zz-zz")
            .ok(202),

        // Query service: tokens, bodies, parameters, sizes.
        row("token sequence 2^64-1", q, M::GET, format!("/v1/stats/messages?consistency_token={}.18446744073709551615", mine_id.replace('-', "")))
            .expect(400, "invalid_field"),
        row("token sequence 2^63 on a message read", q, M::GET, format!("/v1/messages/{mine_id}?consistency_token={}.9223372036854775808", mine_id.replace('-', "")))
            .expect(400, "invalid_field"),
        row("token header 2^63 on stats", q, M::GET, "/v1/stats/messages")
            .header("consistency-token", format!("{}.9223372036854775808", mine_id.replace('-', "")))
            .expect(400, "invalid_field"),
        row("non-ASCII token header on GET stats", q, M::GET, "/v1/stats/messages")
            .header("consistency-token", b"\xe9".to_vec())
            .expect(400, "invalid_field"),
        row("non-ASCII token header on POST stats", q, M::POST, "/v1/stats/messages:query")
            .json(json!({}))
            .header("consistency-token", b"\xe9".to_vec())
            .expect(400, "invalid_field"),
        row("non-ASCII token header on a message read", q, M::GET, format!("/v1/messages/{mine_id}"))
            .header("consistency-token", b"\xe9".to_vec())
            .expect(400, "invalid_field"),
        row("stats body with a key twice", q, M::POST, "/v1/stats/messages:query")
            .text(r#"{"bucket":"hour","bucket":"day"}"#)
            .expect(400, "duplicate_key"),
        row("stats body as array", q, M::POST, "/v1/stats/messages:query").text("[]").expect(400, "invalid_body"),
        row("stats body with NUL", q, M::POST, "/v1/stats/messages:query")
            .text(r#"{"tag":"a\u0000"}"#)
            .expect(400, "unsupported_character"),
        row("stats parameter twice", q, M::GET, "/v1/stats/messages?bucket=hour&bucket=day").expect(400, "invalid_field"),
        row("stats unknown parameter", q, M::GET, "/v1/stats/messages?colour=red").expect(400, "invalid_field"),
        row("stats zone injection", q, M::GET, "/v1/stats/messages?tz=%27%3B%20DROP%20TABLE%20events%3B--").expect(400, "invalid_field"),
        row("stats NUL in a tag", q, M::GET, "/v1/stats/messages?tag=%00").expect(400, "invalid_field"),
        row("stats 400 days of hours by 20 tags", q, M::GET, format!("/v1/stats/messages?from={}&to={}&bucket=hour&group_by=tag", since(399), since(-1)))
            .expect(400, "answer_too_large"),
        row("stats 400 days of 15 minutes", q, M::GET, format!("/v1/stats/messages?from={}&to={}&bucket=15m", since(399), since(-1)))
            .expect(400, "invalid_field"),
        row("stats over 400 days", q, M::GET, format!("/v1/stats/messages?from={}&to={}&bucket=day", since(500), since(0)))
            .expect(400, "invalid_field"),
        row("POST on the stats GET route", q, M::POST, "/v1/stats/messages").json(json!({})).expect(405, "method_not_allowed"),
        row("timeline page of 5000", q, M::GET, format!("/v1/messages/{mine_id}/events?limit=5000")).expect(400, "invalid_field"),
        row("timeline after -1", q, M::GET, format!("/v1/messages/{mine_id}/events?after=-1")).expect(400, "invalid_field"),
        row("list page of 0", q, M::GET, "/v1/messages?limit=0").expect(400, "invalid_field"),
        row("list cursor garbage", q, M::GET, "/v1/messages?cursor=%27%20OR%201%3D1").expect(400, "invalid_field"),
        row("read another tenant's message", q, M::GET, format!("/v1/messages/{theirs_id}")).expect(404, "message_not_found"),
        row("another tenant reads my message", q, M::GET, format!("/v1/messages/{mine_id}"))
            .auth(Auth::Other)
            .expect(404, "message_not_found"),
        row("another tenant observes my message", c, M::POST, &obs)
            .json(observation("opened", "intruder"))
            .auth(Auth::Other)
            .expect(404, "message_not_found"),
        row("read not a uuid", q, M::GET, "/v1/messages/../../etc/passwd").expect(404, "route_not_found"),
        row("query unknown route", q, M::GET, "/admin").expect(404, "route_not_found"),
        row("query URI over 8 KiB", q, M::GET, huge_uri).expect(414, "uri_too_long"),
        row("query with 65 headers", q, M::GET, "/v1/stats/messages").expect(431, "headers_too_large"),
        row("query without key", q, M::GET, "/v1/stats/messages").auth(Auth::None).expect(401, "unauthorized"),
        row("BEARER in capitals on the query service", q, M::GET, "/v1/stats/messages")
            .auth(Auth::Raw(format!("BEARER {}", ctx.mine_key).into_bytes()))
            .ok(200),
        row("bearer in lower case on the command service", c, M::POST, "/v1/messages")
            .json(email())
            .auth(Auth::Raw(format!("bearer {}", ctx.mine_key).into_bytes()))
            .ok(202),
    ];
    for r in rows.iter_mut() {
        if r.name.starts_with("65 headers") || r.name == "query with 65 headers" {
            for i in 0..65 {
                r.headers.push((format!("x-h{i}"), b"v".to_vec()));
            }
        }
    }
    assert!(rows.len() >= 60, "{} rows", rows.len());

    let mut failures = Vec::new();
    let mut accepted = Vec::new();
    for r in &rows {
        match ctx.send(r).await {
            Ok((status, body, headers)) => {
                let code = body["error"]["code"].as_str();
                if status != r.status || code != r.code {
                    failures.push(format!(
                        "{}: want {} {:?}, got {status} {code:?}: {body}",
                        r.name, r.status, r.code
                    ));
                }
                if status == 405 && !headers.contains_key("allow") {
                    failures.push(format!("{}: 405 without Allow", r.name));
                }
                if status == 202 {
                    accepted.push((r.name, body));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", r.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    // Every message a hostile row got accepted takes its next command and reads back.
    for (name, answer) in &accepted {
        let Some(id) = answer["message_id"].as_str() else {
            continue;
        };
        let next = ctx
            .sys
            .client
            .post(
                ctx.sys
                    .command
                    .url(&format!("/v1/messages/{id}/observations")),
            )
            .bearer_auth(&ctx.mine_key)
            .json(&observation("dispatched", &format!("next-{id}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: next command dropped: {e}"));
        assert_eq!(
            next.status().as_u16(),
            202,
            "{name}: {:?}",
            next.text().await
        );
        let token = next.json::<Value>().await.unwrap()["consistency_token"]
            .as_str()
            .unwrap()
            .to_string();
        let read = ctx
            .sys
            .client
            .get(ctx.sys.query.url(&format!(
                "/v1/messages/{id}/events?consistency_token={token}&wait_ms=10000"
            )))
            .bearer_auth(&ctx.mine_key)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status().as_u16(), 200, "{name}");
        let timeline: Value = read.json().await.unwrap();
        assert_eq!(
            timeline["freshness"]["consistent"], true,
            "{name}: {timeline}"
        );
        assert_eq!(
            timeline["freshness"]["parked_events"], 0,
            "{name}: {timeline}"
        );
    }
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&ctx.sys.pool)
        .await
        .unwrap();
    assert_eq!(parked, 0, "nothing accepted is unprojectable");

    // The largest answers the query service allows, many at once.
    let widest = format!(
        "/v1/stats/messages?from={}&to={}&bucket=hour&group_by=channel&metrics=counts,rates,latency",
        since(273),
        since(-1)
    );
    let queries = (0..12).map(|_| {
        let client = ctx.sys.client.clone();
        let url = ctx.sys.query.url(&widest);
        let key = ctx.mine_key.clone();
        async move {
            let r = client
                .get(url)
                .bearer_auth(key)
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let len = r.bytes().await.unwrap().len();
            (status, len)
        }
    });
    let answers = futures::future::join_all(queries).await;
    let served: Vec<usize> = answers
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, n)| *n)
        .collect();
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 503),
        "{answers:?}"
    );
    assert!(!served.is_empty() && served[0] > 1_000_000, "{answers:?}");

    // The largest batches the command service allows, several at once.
    let batch = json!({"commands": (0..1000).map(|i| json!({"op": "submit", "message": {
        "channel": "email", "recipient": "ada@example.com", "provider": "ses",
        "content": {"type": "template", "template_id": "t", "variables": {"pad": "p".repeat(16_000), "i": i}}}})).collect::<Vec<_>>()});
    let batch = serde_json::to_vec(&batch).unwrap();
    assert!(batch.len() > 15 * 1024 * 1024);
    let batches = (0..4).map(|_| {
        let client = ctx.sys.client.clone();
        let url = ctx.sys.command.url("/v1/batch");
        let key = ctx.mine_key.clone();
        let body = batch.clone();
        async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    let statuses = futures::future::join_all(batches).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );

    ctx.sys.assert_ready().await;
    ctx.sys.assert_verified().await;
    ctx.sys.assert_no_panics();
    let query_peak = ctx.sys.query.peak_rss_kib() / 1024;
    let command_peak = ctx.sys.command.peak_rss_kib() / 1024;
    eprintln!("peak RSS: query service {query_peak} MiB, command service {command_peak} MiB; answers {served:?}; batches {statuses:?}");
    assert!(
        query_peak < QUERY_PEAK_MIB,
        "query service peaked at {query_peak} MiB"
    );
    assert!(
        command_peak < COMMAND_PEAK_MIB,
        "command service peaked at {command_peak} MiB"
    );
}
