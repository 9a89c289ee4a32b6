//! The command service while its event store is down.

use test_support::TestDb;

#[tokio::test]
async fn commands_answer_503_while_the_event_store_is_down_and_recover() {
    let db = TestDb::empty().await;
    let proxy = test_support::TcpProxy::start(test_support::url_socket_addr(&db.url)).await;
    let settings = test_support::settings(&db.url_via(proxy.addr()));
    let app = test_support::RunningApp::spawn(command_service::build(settings).await.unwrap());
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
