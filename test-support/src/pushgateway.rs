//! A Pushgateway of one test's own: Debian's `prometheus-pushgateway` started on a free
//! loopback port without persistence, and killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the binary is (`HERALD_TEST_PUSHGATEWAY_BIN` overrides).
pub fn binary() -> String {
    std::env::var("HERALD_TEST_PUSHGATEWAY_BIN")
        .unwrap_or_else(|_| "/usr/bin/prometheus-pushgateway".to_string())
}

/// A running Pushgateway.
pub struct Pushgateway {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
}

impl Pushgateway {
    /// Starts one and waits until it answers `/-/ready`.
    pub async fn start() -> Self {
        for _ in 0..5 {
            // Pick a free port; another process could take it before the gateway binds,
            // hence the retries.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new(binary())
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--persistence.file=")
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}); apt-get install prometheus-pushgateway",
                        binary()
                    )
                });
            let mut gateway = Self {
                url: format!("http://127.0.0.1:{port}"),
                child,
            };
            if gateway.wait_ready(Duration::from_secs(10)).await {
                return gateway;
            }
        }
        panic!("the Pushgateway did not become ready");
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false; // exited: the port was taken
            }
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The gateway's own `/metrics` text (every pushed group, plus its own metrics).
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("Pushgateway answers /metrics")
            .text()
            .await
            .expect("Pushgateway /metrics body")
    }

    /// The groups the gateway holds, from `/api/v1/metrics`: each group's labels.
    pub async fn groups(&self) -> Vec<std::collections::BTreeMap<String, String>> {
        let body: serde_json::Value = reqwest::get(format!("{}/api/v1/metrics", self.url))
            .await
            .expect("Pushgateway answers /api/v1/metrics")
            .json()
            .await
            .expect("Pushgateway API answers JSON");
        body["data"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .filter_map(|g| serde_json::from_value(g["labels"].clone()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
