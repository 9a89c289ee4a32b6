//! The projector's metrics: `/metrics` parsed as Prometheus text, every projector metric
//! registered with its documented type, counters moving by exactly the work done (events
//! published and projected, one poison event dead-lettered), and the sampled gauges
//! (leader, lags, pending entries, parked dead letters) following the state.

use std::time::Duration;

use projector::metrics as m;
use test_support::events::{eventually, plan};
use test_support::prom_text::{self, Exposition};
use test_support::Harness;

async fn scrape(client: &reqwest::Client, url: &str) -> Exposition {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    prom_text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn doc() -> String {
    std::fs::read_to_string(format!(
        "{}/../docs/operations.md",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test]
async fn projector_metrics_are_documented_and_follow_the_work() {
    let h = Harness::new().await;
    let mut tuning = h.tuning();
    tuning.metrics_interval = Duration::from_millis(100);
    let shards = tuning.shards;

    // One message whose projection always fails: it is parked after max_failures.
    let (poisoned, cmds) = plan(71, 1).messages.remove(0);
    sqlx::query(&format!(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.message_id = '{poisoned}' THEN RAISE EXCEPTION 'poisoned by the test'; END IF; \
         RETURN NEW; END $$"
    ))
    .execute(&h.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON message_events \
         FOR EACH ROW EXECUTE FUNCTION poison()",
    )
    .execute(&h.pool)
    .await
    .unwrap();

    let app = h.start("metrics-1", tuning.clone()).await;
    let client = reqwest::Client::new();
    let url = app.url("/metrics");
    let before = scrape(&client, &url).await;

    h.append(poisoned, cmds[0].clone()).await;
    let n = h.write(plan(72, 15), 3).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(total as usize, n + 1);

    // Everything but the poisoned event reaches the read model; that one is parked.
    let after = eventually(Duration::from_secs(30), "the metrics to settle", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let s = scrape(&client, &url).await;
            let settled = s.sum(m::DEAD_LETTERS_TOTAL, &[]) == 1.0
                && s.sum(m::DEAD_LETTERS, &[]) == 1.0
                && s.sum(m::PROJECTOR_EVENTS_PROJECTED_TOTAL, &[]) == n as f64
                && s.sum(m::PROJECTOR_LAG_EVENTS, &[]) == 0.0
                && s.sum(m::RELAY_LAG_EVENTS, &[]) == 0.0
                // Sampled after the last acknowledgement, for every shard.
                && s.matching(m::STREAM_PENDING_ENTRIES, &[]).count() == shards as usize
                && s.sum(m::STREAM_PENDING_ENTRIES, &[]) == 0.0;
            settled.then_some(s)
        }
    })
    .await;
    // Registered with the documented types (labelled families show once they have a
    // series), and documented.
    let doc = doc();
    for name in m::NAMES {
        let kind = after
            .type_of(name)
            .unwrap_or_else(|| panic!("{name} is not registered"));
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("{name} has no row in docs/operations.md"));
        assert!(
            row.contains(&format!("| {kind} |")),
            "{name} is a {kind}, the doc says: {row}"
        );
    }

    let delta = |name: &str| after.sum(name, &[]) - before.sum(name, &[]);
    assert_eq!(delta(m::RELAY_PUBLISHED_TOTAL), total as f64);
    assert_eq!(delta(m::PROJECTOR_EVENTS_PROJECTED_TOTAL), n as f64);
    // One lag observation per projected event; batch sizes add up to the projected events.
    let lag = format!("{}_count", m::PROJECTOR_LAG_SECONDS);
    assert_eq!(delta(&lag), n as f64);
    assert_eq!(delta(&format!("{}_sum", m::PROJECTOR_BATCH_SIZE)), n as f64);
    let batches = delta(&format!("{}_count", m::PROJECTOR_BATCH_SIZE));
    assert!(batches >= 1.0 && batches <= n as f64, "{batches} batches");
    // Events went from commit to read model within the test's time.
    let lag_sum = delta(&format!("{}_sum", m::PROJECTOR_LAG_SECONDS));
    assert!(lag_sum > 0.0 && lag_sum / (n as f64) < 30.0, "{lag_sum}");

    assert_eq!(after.sum(m::RELAY_LEADER, &[]), 1.0);
    assert_eq!(after.sum(m::RELAY_LAG_SECONDS, &[]), 0.0);
    for shard in 0..shards {
        let shard = shard.to_string();
        assert_eq!(
            after
                .matching(m::PROJECTOR_LAG_EVENTS, &[("shard", &shard)])
                .count(),
            1,
            "lag of shard {shard}"
        );
        let labels = [("shard", shard.as_str()), ("group", "projector-v1")];
        let pending: Vec<_> = after.matching(m::STREAM_PENDING_ENTRIES, &labels).collect();
        assert_eq!(pending.len(), 1, "pending of shard {shard}");
        assert_eq!(pending[0].value, 0.0, "everything acknowledged");
    }
    // Labels stay low-cardinality: no message or tenant ids anywhere.
    for s in &after.samples {
        for key in s.labels.keys() {
            assert!(
                ["service", "shard", "group", "le", "route", "method", "status"]
                    .contains(&key.as_str()),
                "{}: unexpected label {key}",
                s.name
            );
        }
    }

    // The horizon age follows a transaction that holds the horizon back: it grows past
    // the time the transaction has been open, and falls once it commits.
    let mut holder = h.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *holder)
        .await
        .unwrap();
    let held = eventually(Duration::from_secs(30), "the horizon age to grow", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let age = scrape(&client, &url)
                .await
                .sum(m::RELAY_HORIZON_AGE_SECONDS, &[]);
            (age >= 1.5).then_some(age)
        }
    })
    .await;
    holder.commit().await.unwrap();
    eventually(Duration::from_secs(30), "the horizon age to fall", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let age = scrape(&client, &url)
                .await
                .sum(m::RELAY_HORIZON_AGE_SECONDS, &[]);
            (age < held).then_some(())
        }
    })
    .await;
    app.stop().await;
}
