//! Loading streams: what the appender writes reads back through cqrs-es (and through
//! postgres-es, whose schema Herald's store keeps), and what cannot be decoded is an error
//! naming the event, never a panic.

use cqrs_es::persist::{PersistedEventRepository, PersistenceError};
use domain::Message;
use event_store::{Appender, EventRepository, EventRow, UnreadableEvent};
use postgres_es::PostgresEventRepository;
use test_support::TestDb;

async fn insert_raw(pool: &sqlx::PgPool, id: &str, sequence: i64, payload: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Message', $1, $2, 'Probe', '1', $3::jsonb, \
         '{\"tenant_id\": \"t-1\"}')",
    )
    .bind(id)
    .bind(sequence)
    .bind(payload)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn appended_rows_read_back_the_same_through_herald_and_postgres_es() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let appender = Appender::start(pool.clone(), "Message", 1, 100);
    let rows: Vec<EventRow> = (1..=3)
        .map(|s| EventRow {
            aggregate_id: "m-1".into(),
            sequence: s,
            event_type: format!("E{s}"),
            event_version: "1".into(),
            payload: format!(r#"{{"n": {s}, "big": 1.7976931348623157e308, "tiny": 5e-324}}"#),
            metadata: r#"{"tenant_id": "t-1"}"#.into(),
        })
        .collect();
    appender.append(rows).await.unwrap();

    let ours = EventRepository::new(pool.clone())
        .get_events::<Message>("m-1")
        .await
        .unwrap();
    let theirs = PostgresEventRepository::new(pool.clone())
        .get_events::<Message>("m-1")
        .await
        .unwrap();
    assert_eq!(ours.len(), 3);
    assert_eq!(ours, theirs);
    assert_eq!(ours[2].payload["big"], serde_json::json!(f64::MAX));
    assert_eq!(ours[2].payload["tiny"], serde_json::json!(5e-324));
    let later = EventRepository::new(pool)
        .get_last_events::<Message>("m-1", 1)
        .await
        .unwrap();
    assert_eq!(
        later.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![2, 3]
    );
}

#[tokio::test]
async fn an_undecodable_stored_event_is_an_error_naming_it_and_the_owner_is_still_known() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    insert_raw(&pool, "m-2", 1, r#"{"fine": true}"#).await;
    // jsonb takes 200 levels of nesting; serde_json reads at most 128.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    insert_raw(&pool, "m-2", 2, &format!(r#"{{"deep": {deep}}}"#)).await;
    let repo = EventRepository::new(pool);
    let err = repo.get_events::<Message>("m-2").await.unwrap_err();
    let PersistenceError::DeserializationError(inner) = err else {
        panic!("expected a deserialization error, got {err:?}");
    };
    let unreadable = inner
        .downcast_ref::<UnreadableEvent>()
        .expect("typed as an unreadable event");
    assert_eq!(unreadable.aggregate_id, "m-2");
    assert_eq!(unreadable.sequence, 2);
    assert_eq!(
        repo.owner_of("Message", "m-2").await.unwrap().as_deref(),
        Some("t-1")
    );
    assert_eq!(repo.owner_of("Message", "nobody").await.unwrap(), None);
}
