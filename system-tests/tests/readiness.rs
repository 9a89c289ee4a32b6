//! Each service is ready exactly when what it needs answers: with Redis cut off, the
//! command service (which never uses Redis) stays ready and keeps accepting commands, the
//! query service (which reads only the databases) stays ready, and the projector (which
//! moves events through Redis) turns unready until Redis returns, then catches up.

use std::time::Duration;

use serde_json::{json, Value};
use system_tests::{bins, System};
use test_support::TcpProxy;

async fn readiness(client: &reqwest::Client, url: String) -> (u16, Value) {
    let r = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_only_the_projector_is_unready_and_commands_keep_landing() {
    let redis_addr: std::net::SocketAddr = test_support::redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(redis_addr).await;
    let redis_url = format!("redis://{}", proxy.addr());
    let sys = System::start(
        bins!(),
        &[
            ("HERALD_REDIS_URL", &redis_url),
            ("HERALD_HEALTH_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    sys.assert_ready().await;
    let (_, key) = sys.tenant("ready").await;
    let submit = || async {
        let r = sys
            .client
            .post(sys.command.url("/v1/messages"))
            .bearer_auth(&key)
            .json(
                &json!({"channel": "sms", "recipient": "+4915112345678", "provider": "twilio",
                          "content": {"type": "inline", "body": "hi"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        r.json::<Value>().await.unwrap()
    };
    submit().await;

    proxy.cut();
    let (status, report) = readiness(&sys.client, sys.command.url("/health/ready")).await;
    assert_eq!(status, 200, "command service: {report}");
    assert!(report["checks"].get("redis").is_none(), "{report}");
    let (status, report) = readiness(&sys.client, sys.query.url("/health/ready")).await;
    assert_eq!(status, 200, "query service: {report}");
    let during: Vec<Value> = futures::future::join_all((0..5).map(|_| submit())).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, report) = readiness(&sys.client, sys.projector.url("/health/ready")).await;
        if status == 503 {
            assert!(
                report["failed"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("redis")),
                "{report}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projector stayed ready without Redis: {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    proxy.restore();
    sys.projector
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("ready again once Redis is back");
    // Nothing accepted while Redis was away is lost: it reaches the read models.
    for answer in during {
        let token = answer["consistency_token"].as_str().unwrap();
        let id = answer["message_id"].as_str().unwrap();
        let r = sys
            .client
            .get(sys.query.url(&format!(
                "/v1/messages/{id}?consistency_token={token}&wait_ms=10000"
            )))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["freshness"]["consistent"], true, "{body}");
    }
    sys.assert_verified().await;
    sys.assert_no_panics();
}
