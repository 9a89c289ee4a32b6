//! Generated request bodies for every command against the running system. Whatever the
//! body, the command service answers (never a dropped connection), never with a 5xx, and
//! every message it accepted reads back through the query service and takes its next
//! command.
//!
//! Bodies are valid ones with mutations (a field replaced by an arbitrary JSON value, a
//! field removed, an unknown field added), or arbitrary JSON outright: arbitrary values
//! include the cases that broke Herald before (NUL, the largest doubles, deep nesting) and
//! many that never did.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};
use system_tests::{bins, System};

/// Cases per run, stated: each is one HTTP command (plus a batch of up to 8 for the batch
/// form).
const CASES: u32 = 600;

fn arbitrary_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,8}",
        Just(String::new()),
        Just("\u{0}".to_string()),
        Just("a\u{0}b".to_string()),
        Just("\u{2028}\u{feff}\u{10ffff}".to_string()),
        Just("+4915112345678".to_string()),
        Just("ada@example.com".to_string()),
        Just("fcm:token".to_string()),
        Just("2026-11-21T09:00:00Z".to_string()),
        Just("email".to_string()),
        Just("delivered".to_string()),
        Just("x".repeat(70_000)),
        "\\PC{0,40}",
    ]
}

fn arbitrary_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(f64::MAX)),
        Just(json!(f64::MIN_POSITIVE)),
        Just(json!(5e-324)),
        Just(json!(-0.0)),
        Just(json!(0)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arbitrary_number(),
        arbitrary_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(40, 200, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(arbitrary_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn submit_base(tags: bool) -> Value {
    let mut v = json!({"channel": "email", "recipient": "ada@example.com", "provider": "ses",
                       "content": {"type": "template", "template_id": "t1",
                                   "variables": {"name": "Ada", "n": 3}}});
    if tags {
        v["tags"] = json!(["gen"]);
    }
    v
}

fn observe_base() -> Value {
    json!({"kind": "dispatched", "dedupe_key": "d1", "occurred_at": chrono::Utc::now().to_rfc3339(),
           "details": {"attempt": 1}})
}

/// JSON pointers of the fields a mutation may hit.
const SUBMIT_FIELDS: &[&str] = &[
    "/channel",
    "/recipient",
    "/provider",
    "/content",
    "/content/type",
    "/content/template_id",
    "/content/variables",
    "/content/variables/name",
    "/tags",
    "/scheduled_at",
    "/ttl_seconds",
];
const OBSERVE_FIELDS: &[&str] = &[
    "/kind",
    "/dedupe_key",
    "/occurred_at",
    "/details",
    "/details/attempt",
];

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    Add(String, Value),
    Whole(Value),
    None,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (0usize..32, arbitrary_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        1 => (0usize..32).prop_map(Mutation::Remove),
        1 => ("[a-z]{1,6}", arbitrary_json()).prop_map(|(k, v)| Mutation::Add(k, v)),
        1 => arbitrary_json().prop_map(Mutation::Whole),
        1 => Just(Mutation::None),
    ]
}

fn apply(mut base: Value, fields: &[&str], m: &Mutation) -> Value {
    match m {
        Mutation::Replace(i, v) => {
            if let Some(slot) = base.pointer_mut(fields[i % fields.len()]) {
                *slot = v.clone();
            } else if let Some(obj) = base.as_object_mut() {
                let name = fields[i % fields.len()].rsplit('/').next().unwrap();
                obj.insert(name.to_string(), v.clone());
            }
            base
        }
        Mutation::Remove(i) => {
            let path = fields[i % fields.len()];
            let (parent, name) = path.rsplit_once('/').unwrap();
            if let Some(Value::Object(o)) =
                base.pointer_mut(if parent.is_empty() { "" } else { parent })
            {
                o.remove(name);
            }
            base
        }
        Mutation::Add(k, v) => {
            base.as_object_mut().unwrap().insert(k.clone(), v.clone());
            base
        }
        Mutation::Whole(v) => v.clone(),
        Mutation::None => base,
    }
}

#[derive(Debug, Clone)]
enum Case {
    Submit(Mutation, bool),
    Observe(Mutation),
    Cancel(Mutation),
    Batch(Vec<Mutation>),
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        4 => (mutation(), any::<bool>()).prop_map(|(m, t)| Case::Submit(m, t)),
        3 => mutation().prop_map(Case::Observe),
        1 => mutation().prop_map(Case::Cancel),
        1 => prop::collection::vec(mutation(), 1..8).prop_map(Case::Batch),
    ]
}

struct Run {
    sys: System,
    key: String,
    /// A message each observe and cancel case targets (one per case, so cases stay
    /// independent of each other's outcome).
    accepted: std::sync::Mutex<Vec<String>>,
    /// Counts per outcome class, for the report.
    statuses: std::sync::Mutex<std::collections::BTreeMap<u16, u32>>,
}

impl Run {
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), TestCaseError> {
        let r = self
            .sys
            .client
            .post(self.sys.command.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| TestCaseError::fail(format!("no answer to {body}: {e}")))?;
        let status = r.status().as_u16();
        let answer: Value = r
            .json()
            .await
            .map_err(|e| TestCaseError::fail(format!("answer not JSON: {e}")))?;
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
        prop_assert!(status < 500, "{status} for {body}: {answer}");
        Ok((status, answer))
    }

    async fn fresh_message(&self) -> String {
        let (status, answer) = self
            .post("/v1/messages", &submit_base(false))
            .await
            .unwrap();
        assert_eq!(status, 202);
        answer["message_id"].as_str().unwrap().to_string()
    }

    fn accept(&self, answer: &Value) {
        if let Some(id) = answer["message_id"].as_str() {
            self.accepted.lock().unwrap().push(id.to_string());
        }
    }

    async fn one(&self, case: Case) -> Result<(), TestCaseError> {
        match case {
            Case::Submit(m, tags) => {
                let body = apply(submit_base(tags), SUBMIT_FIELDS, &m);
                let (status, answer) = self.post("/v1/messages", &body).await?;
                if status == 202 {
                    self.accept(&answer);
                }
            }
            Case::Observe(m) => {
                let id = self.fresh_message().await;
                let body = apply(observe_base(), OBSERVE_FIELDS, &m);
                self.post(&format!("/v1/messages/{id}/observations"), &body)
                    .await?;
                self.accept(&json!({"message_id": id}));
            }
            Case::Cancel(m) => {
                let id = self.fresh_message().await;
                let body = apply(json!({"reason": "changed my mind"}), &["/reason"], &m);
                self.post(&format!("/v1/messages/{id}/cancel"), &body)
                    .await?;
                self.accept(&json!({"message_id": id}));
            }
            Case::Batch(ms) => {
                let commands: Vec<Value> = ms
                    .iter()
                    .map(|m| json!({"op": "submit", "message": apply(submit_base(true), SUBMIT_FIELDS, m)}))
                    .collect();
                let (status, answer) = self
                    .post("/v1/batch", &json!({"commands": commands}))
                    .await?;
                if status == 200 {
                    for r in answer["results"].as_array().unwrap() {
                        let s = r["status"].as_u64().unwrap();
                        prop_assert!(s < 500, "batch item {s}: {r}");
                        if s == 202 {
                            self.accept(&r["result"]);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[test]
fn generated_bodies_never_break_the_command_service_or_a_message() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let run = rt.block_on(async {
        let sys = System::start(bins!(), &[]).await;
        let (_, key) = sys.tenant("generated").await;
        Run {
            sys,
            key,
            accepted: Default::default(),
            statuses: Default::default(),
        }
    });
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&case(), |c| rt.block_on(run.one(c)));
    if let Err(e) = outcome {
        panic!("{e}");
    }

    rt.block_on(async {
        let accepted = run.accepted.lock().unwrap().clone();
        let statuses = run.statuses.lock().unwrap().clone();
        eprintln!(
            "{CASES} cases: statuses {statuses:?}; {} messages accepted",
            accepted.len()
        );
        assert!(
            statuses.get(&202).copied().unwrap_or(0) > 50,
            "{statuses:?}"
        );
        assert!(
            statuses.get(&400).copied().unwrap_or(0) > 50,
            "{statuses:?}"
        );
        // Every accepted message takes its next command and reads back.
        for id in &accepted {
            let next = run
                .post(
                    &format!("/v1/messages/{id}/observations"),
                    &json!({"kind": "delivered", "dedupe_key": format!("final-{id}"),
                            "occurred_at": chrono::Utc::now().to_rfc3339()}),
                )
                .await
                .unwrap();
            assert_eq!(next.0, 202, "{id}: {}", next.1);
            let token = next.1["consistency_token"].as_str().unwrap();
            let read = run
                .sys
                .client
                .get(run.sys.query.url(&format!(
                    "/v1/messages/{id}?consistency_token={token}&wait_ms=10000"
                )))
                .bearer_auth(&run.key)
                .send()
                .await
                .unwrap();
            assert_eq!(read.status().as_u16(), 200, "{id}");
            let body: Value = read.json().await.unwrap();
            assert_eq!(body["freshness"]["consistent"], true, "{id}: {body}");
        }
        let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(&run.sys.pool)
            .await
            .unwrap();
        assert_eq!(parked, 0);
        run.sys.assert_ready().await;
        run.sys.assert_no_panics();
    });
}
