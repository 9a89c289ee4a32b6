//! Group commit keeps each command all-or-nothing, conflicts per command, and one
//! command's failure its own.
//!
//! Groups are made deterministic by holding a lock on `events` while commands queue: the
//! appender's single flusher blocks on its first command, everything sent meanwhile waits
//! in the queue, and the next transaction carries all of it, which every winner's
//! [`Committed::group`] then proves.

use std::time::Duration;

use event_store::{AppendError, Appender, Committed, EventRow};
use sqlx::{Connection, PgConnection, PgPool};
use test_support::TestDb;

fn row(id: &str, sequence: i64) -> EventRow {
    EventRow {
        aggregate_id: id.to_string(),
        sequence,
        event_type: "Probe".into(),
        event_version: "1".into(),
        payload: format!("{{\"n\": {sequence}}}"),
        metadata: "{}".into(),
    }
}

async fn sequences(pool: &PgPool, id: &str) -> Vec<(i64, serde_json::Value)> {
    sqlx::query_as("SELECT sequence, payload FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Events of streams matching `pattern`, and the transactions that wrote them.
async fn transactions(pool: &PgPool, pattern: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT tx_id::text) FROM events WHERE aggregate_id LIKE $1",
    )
    .bind(pattern)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A transaction holding `events` so no INSERT can proceed until it ends.
struct Hold {
    conn: PgConnection,
}

impl Hold {
    async fn take(db: &TestDb) -> Self {
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .unwrap();
        Self { conn }
    }

    async fn release(mut self) {
        sqlx::query("COMMIT").execute(&mut self.conn).await.unwrap();
    }
}

/// Waits until some session waits for a lock on `events` (the blocked first flush).
async fn wait_for_blocked_insert(pool: &PgPool) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the first flush never blocked on the held table");
}

/// Sends `commands` while the table is held: a first command alone blocks the flusher, and
/// all of `commands` are queued (each future polled once, which enqueues it) before the
/// table is released, so they share the next transaction. Results in order.
async fn in_one_group(
    db: &TestDb,
    pool: &PgPool,
    appender: &Appender,
    commands: Vec<Vec<EventRow>>,
) -> Vec<Result<Committed, AppendError>> {
    let hold = Hold::take(db).await;
    let a = appender.clone();
    let blocker_id = format!("blocker-{}", uuid::Uuid::new_v4());
    let blocker = tokio::spawn(async move { a.append(vec![row(&blocker_id, 1)]).await });
    wait_for_blocked_insert(pool).await;
    let mut futures: Vec<_> = commands
        .into_iter()
        .map(|rows| Box::pin(appender.append(rows)))
        .collect();
    for f in &mut futures {
        assert!(futures::poll!(f.as_mut()).is_pending());
    }
    hold.release().await;
    assert_eq!(
        blocker.await.unwrap().unwrap().group,
        1,
        "the blocker went alone"
    );
    futures::future::join_all(futures).await
}

#[tokio::test]
async fn a_command_that_partly_conflicts_appends_nothing_and_others_in_its_group_land() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    // Another writer already holds position 2 of stream y.
    sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('Message', 'y', 2, 'Other', '1', '{\"other\": true}', '{}')")
        .execute(&pool)
        .await
        .unwrap();
    let appender = Appender::start(pool.clone(), "Message", 1, 1_000);
    let mut commands: Vec<Vec<EventRow>> = (0..50)
        .map(|i| vec![row(&format!("s{i}"), 1), row(&format!("s{i}"), 2)])
        .collect();
    commands.insert(25, vec![row("y", 1), row("y", 2)]);
    let results = in_one_group(&db, &pool, &appender, commands).await;
    assert_eq!(results[25], Err(AppendError::Conflict));
    for (i, r) in results.iter().enumerate().filter(|(i, _)| *i != 25) {
        assert_eq!(
            r,
            &Ok(Committed {
                group: 51,
                isolated: false
            }),
            "command {i} shared the loser's transaction"
        );
    }
    let y = sequences(&pool, "y").await;
    assert_eq!(
        y.len(),
        1,
        "the landed half of the losing command was taken back: {y:?}"
    );
    assert_eq!(y[0].1["other"], true);
    for i in 0..50 {
        assert_eq!(sequences(&pool, &format!("s{i}")).await.len(), 2);
    }
    // The store agrees with the appender's report: the winners' 100 events are one
    // transaction's.
    assert_eq!(transactions(&pool, "s%").await, (100, 1));

    // Two commands of one group for the same position: exactly the first wins.
    let racers: Vec<Vec<EventRow>> = (0..8)
        .map(|k| {
            let mut r = row("z", 1);
            r.payload = format!("{{\"k\": {k}}}");
            vec![r]
        })
        .collect();
    let results = in_one_group(&db, &pool, &appender, racers).await;
    assert_eq!(results[0].as_ref().map(|c| c.group), Ok(8));
    assert!(results[1..]
        .iter()
        .all(|r| r == &Err(AppendError::Conflict)));
    assert_eq!(
        sequences(&pool, "z").await,
        vec![(1, serde_json::json!({"k": 0}))]
    );
}

/// Rows the database refuses although they are well-formed Rust values: each a different
/// kind of data error.
fn poison(kind: usize, id: &str) -> Vec<EventRow> {
    let mut r = row(id, 1);
    match kind {
        // jsonb refuses U+0000 (22P05).
        0 => r.payload = "{\"body\": \"a\\u0000b\"}".into(),
        // Not JSON at all (22P02).
        1 => r.payload = "{not json".into(),
        // A CHECK constraint: sequences start at 0 (23514).
        _ => r.sequence = -1,
    }
    vec![row(id, 0), r]
}

#[tokio::test]
async fn a_data_error_in_one_command_fails_only_that_command() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let appender = Appender::start(pool.clone(), "Message", 1, 1_000);
    for kind in 0..3 {
        let mut commands: Vec<Vec<EventRow>> = (0..40)
            .map(|i| vec![row(&format!("g{kind}-{i}"), 1)])
            .collect();
        commands.insert(7, poison(kind, &format!("bad{kind}")));
        commands.insert(30, poison(kind, &format!("worse{kind}")));
        let results = in_one_group(&db, &pool, &appender, commands).await;
        for (i, r) in results.iter().enumerate() {
            if i == 7 || i == 30 {
                assert!(
                    matches!(r, Err(AppendError::Refused(_))),
                    "kind {kind}: {r:?}"
                );
            } else {
                // Isolated: the group they shared with the bad ones failed, and each was
                // then written on its own.
                assert_eq!(
                    r,
                    &Ok(Committed {
                        group: 1,
                        isolated: true
                    }),
                    "kind {kind}, command {i}"
                );
            }
        }
        for i in 0..40 {
            assert_eq!(sequences(&pool, &format!("g{kind}-{i}")).await.len(), 1);
        }
        // Isolated, in the store too: one transaction per command.
        assert_eq!(transactions(&pool, &format!("g{kind}-%")).await, (40, 40));
        assert!(
            sequences(&pool, &format!("bad{kind}")).await.is_empty(),
            "all or nothing"
        );
        assert!(sequences(&pool, &format!("worse{kind}")).await.is_empty());
    }
    // Afterwards groups form again as usual.
    let results = in_one_group(
        &db,
        &pool,
        &appender,
        (0..5).map(|i| vec![row(&format!("after{i}"), 1)]).collect(),
    )
    .await;
    assert!(results.iter().all(|r| r.as_ref().map(|c| c.group) == Ok(5)));
    assert_eq!(transactions(&pool, "after%").await, (5, 1));
}

#[tokio::test]
async fn an_unreachable_database_fails_every_command_of_the_group_as_unavailable() {
    let db = TestDb::migrated().await;
    let proxy = test_support::TcpProxy::start(test_support::url_socket_addr(&db.url)).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(500))
        .connect(&db.url_via(proxy.addr()))
        .await
        .unwrap();
    let appender = Appender::start(pool, "Message", 1, 100);
    assert_eq!(
        appender.append(vec![row("a", 1)]).await,
        Ok(Committed {
            group: 1,
            isolated: false
        })
    );
    proxy.cut();
    let results =
        futures::future::join_all((0..10).map(|i| appender.append(vec![row(&format!("b{i}"), 1)])))
            .await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(AppendError::Unavailable(_)))),
        "{results:?}"
    );
    let direct = db.pool().await;
    for i in 0..10 {
        assert!(sequences(&direct, &format!("b{i}")).await.is_empty());
    }
}
