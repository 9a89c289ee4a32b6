//! Group commit keeps each command all-or-nothing and conflicts per command.

use command_service::appender::{AppendError, Appender, Row};
use service_kit::testing::TestDb;

fn row(id: &str, sequence: i64) -> Row {
    Row {
        aggregate_id: id.to_string(),
        sequence,
        event_type: "Probe".into(),
        event_version: "1".into(),
        payload: format!("{{\"n\": {sequence}}}"),
        metadata: "{}".into(),
    }
}

async fn sequences(pool: &sqlx::PgPool, id: &str) -> Vec<(i64, serde_json::Value)> {
    sqlx::query_as("SELECT sequence, payload FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
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

    // Many concurrent commands so that several share a transaction with the loser.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let a = appender.clone();
        tasks.push(tokio::spawn(async move {
            a.append(vec![row(&format!("s{i}"), 1), row(&format!("s{i}"), 2)])
                .await
        }));
    }
    let loser = appender.append(vec![row("y", 1), row("y", 2)]).await;
    assert_eq!(loser, Err(AppendError::Conflict));
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(()));
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

    // Two commands for the same position: exactly one wins, whatever the grouping.
    let racers: Vec<_> = (0..8)
        .map(|k| {
            let a = appender.clone();
            tokio::spawn(async move {
                a.append(
                    vec![row("z", 1)]
                        .into_iter()
                        .map(|mut r| {
                            r.payload = format!("{{\"k\": {k}}}");
                            r
                        })
                        .collect(),
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(()) => wins += 1,
            Err(e) => assert_eq!(e, AppendError::Conflict),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(sequences(&pool, "z").await.len(), 1);
}

#[tokio::test]
async fn an_unreachable_database_fails_every_command_of_the_group_as_unavailable() {
    let db = TestDb::migrated().await;
    let proxy =
        service_kit::testing::TcpProxy::start(service_kit::testing::url_socket_addr(&db.url)).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect(&db.url_via(proxy.addr()))
        .await
        .unwrap();
    let appender = Appender::start(pool, "Message", 1, 100);
    assert_eq!(appender.append(vec![row("a", 1)]).await, Ok(()));
    proxy.cut();
    let result = appender.append(vec![row("b", 1)]).await;
    assert!(
        matches!(result, Err(AppendError::Unavailable(_))),
        "{result:?}"
    );
    let direct = db.pool().await;
    assert!(sequences(&direct, "b").await.is_empty());
}

#[tokio::test]
async fn commands_answer_503_while_the_event_store_is_down_and_recover() {
    let db = TestDb::empty().await;
    let proxy =
        service_kit::testing::TcpProxy::start(service_kit::testing::url_socket_addr(&db.url)).await;
    let settings = service_kit::testing::settings(&db.url_via(proxy.addr()));
    let app =
        service_kit::testing::RunningApp::spawn(command_service::build(settings).await.unwrap());
    let (_, key) = service_kit::auth::ApiKeys::new(db.pool().await)
        .create_tenant("outage")
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let body = serde_json::json!({"channel": "push", "recipient": "fcm:abc", "provider": "fcm", "content": {"type": "inline", "body": "hi"}});
    let send = || {
        client
            .post(app.url("/v1/messages"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    assert_eq!(send().await.unwrap().status().as_u16(), 202);
    proxy.cut();
    let down = send().await.unwrap();
    assert_eq!(down.status().as_u16(), 503);
    assert!(down.headers().contains_key("retry-after"));
    let error: serde_json::Value = down.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unavailable");
    proxy.restore();
    let mut status = 0;
    for _ in 0..50 {
        status = send().await.unwrap().status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 202, "recovers once the database is back");
    app.stop().await;
}
