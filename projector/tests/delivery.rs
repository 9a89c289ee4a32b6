//! Delivery guarantees against real PostgreSQL/TimescaleDB and Redis: the relay never skips
//! or duplicates, the projector applies every event exactly once whatever crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use event_store::Cursor;
use projector::relay::Relay;
use read_model::shard::shard_of;
use test_support::events::{eventually, plan};
use test_support::Harness;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn relay(h: &Harness, tuning: &projector::ProjectorSettings) -> Relay {
    let client = redis::Client::open(h.settings.redis_url.as_str()).unwrap();
    Relay::new(
        h.pool.clone(),
        h.pool.clone(),
        client,
        h.settings.redis_prefix.clone(),
        tuning.clone(),
    )
}

async fn all_cursors(h: &Harness) -> Vec<(Cursor, String)> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT tx_id::text::bigint, global_position, aggregate_id FROM events \
         ORDER BY tx_id, global_position",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, g, a)| (Cursor::new(t, g), a))
        .collect()
}

/// Every event of the store is in its shard's stream exactly once, ids increase per shard,
/// and each entry names the previous entry of its shard.
async fn assert_stream_holds_every_event_once(h: &Harness, shards: u32) {
    let events = all_cursors(h).await;
    let entries = h.stream_entries(shards).await;
    let ids: Vec<Cursor> = entries.iter().map(|(_, e)| e.event.cursor).collect();
    let unique: BTreeSet<Cursor> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate stream entries");
    let want: BTreeSet<Cursor> = events.iter().map(|(c, _)| *c).collect();
    let missing: Vec<_> = want.difference(&unique).collect();
    assert!(missing.is_empty(), "events never relayed: {missing:?}");
    assert_eq!(unique, want);
    let mut last: BTreeMap<u32, Cursor> = BTreeMap::new();
    for (shard, e) in &entries {
        assert_eq!(
            *shard,
            shard_of(&e.event.row.aggregate_id, shards),
            "wrong shard"
        );
        let prev = last.get(shard).copied().unwrap_or(Cursor::ZERO);
        assert!(e.event.cursor > prev, "ids must increase within a shard");
        assert_eq!(
            e.prev,
            Some(prev),
            "entry {} names the wrong predecessor",
            e.event.cursor
        );
        last.insert(*shard, e.event.cursor);
    }
}

/// Waits until the relay's cursor has passed the last event of the store.
async fn wait_relayed(
    h: &Harness,
    status: &tokio::sync::watch::Receiver<projector::relay::RelayStatus>,
) {
    let last = all_cursors(h).await.last().unwrap().0;
    eventually(WAIT, "the relay to pass the last event", || {
        let s = status.borrow().clone();
        async move { (s.cursor >= last).then_some(()) }
    })
    .await;
}

/// Each relay head counts exactly the events of its shard at or below it.
async fn assert_heads_count_their_events(h: &Harness, shards: u32) {
    let events = all_cursors(h).await;
    let heads: Vec<(i32, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position, published FROM relay_shard_heads ORDER BY shard",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(heads.len(), shards as usize, "a head per shard: {heads:?}");
    for (shard, tx, gp, published) in heads {
        let head = Cursor::new(tx, gp);
        let want = events
            .iter()
            .filter(|(c, id)| *c <= head && shard_of(id, shards) == shard as u32)
            .count() as i64;
        assert_eq!(published, Some(want), "shard {shard} at {head}");
    }
}

/// Inserts one probe event in `tx`; returns its position.
async fn probe(tx: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Probe', $1, 1, 'Probe', '1', '{}', '{}') \
         RETURNING global_position",
    )
    .bind(Uuid::new_v4().to_string())
    .fetch_one(tx)
    .await
    .unwrap()
}

/// Inserts one event in a transaction that stays open for `hold` while others commit;
/// returns how many events with a higher position committed meanwhile (each one a gap a
/// naive `global_position > cursor` reader could have skipped past).
async fn slow_append(h: &Harness, hold: Duration) -> i64 {
    let mut tx = h.pool.begin().await.unwrap();
    let gp: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Probe', $1, 1, 'Probe', '1', '{}', '{}') \
         RETURNING global_position",
    )
    .bind(Uuid::new_v4().to_string())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_sleep($1)")
        .bind(hold.as_secs_f64())
        .execute(&mut *tx)
        .await
        .unwrap();
    let overtaken: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE global_position > $1")
            .bind(gp)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    overtaken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_never_skips_an_event_of_a_slow_committing_transaction() {
    let h = Harness::new().await;
    let tuning = h.tuning();
    let stop = CancellationToken::new();
    let r = relay(&h, &tuning);
    let status = r.status();
    let task = tokio::spawn(r.run(stop.clone()));

    let fast = h.write(plan(11, 80), 4);
    let slow = async {
        let mut overtaken = 0;
        for round in 0..4u64 {
            let holds = (0..4u64).map(|i| Duration::from_millis(150 + 70 * ((i + round) % 4)));
            let results = futures::future::join_all(holds.map(|d| slow_append(&h, d))).await;
            overtaken += results.iter().sum::<i64>();
        }
        overtaken
    };
    let (_, overtaken) = tokio::join!(fast, slow);
    assert!(
        overtaken > 0,
        "the scenario needs later positions committed before earlier ones"
    );

    // The gap itself, step by step: transaction E takes its id first, the slow transaction
    // S then inserts (position p), E inserts after it (position > p) and commits. The relay
    // must move its cursor past p, publishing E's event, while S is still open, and still
    // publish S's event once S commits.
    let mut early = h.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *early)
        .await
        .unwrap();
    let mut slow_tx = h.pool.begin().await.unwrap();
    let gap = probe(&mut slow_tx).await;
    let after_gap = probe(&mut early).await;
    assert!(after_gap > gap);
    early.commit().await.unwrap();
    eventually(
        WAIT,
        "the relay to pass the open transaction's position",
        || {
            let s = status.borrow().clone();
            async move { (s.cursor.global_position >= after_gap).then_some(()) }
        },
    )
    .await;
    let published: Vec<i64> = h
        .stream_entries(tuning.shards)
        .await
        .iter()
        .map(|(_, e)| e.event.cursor.global_position)
        .collect();
    assert!(published.contains(&after_gap));
    assert!(
        !published.contains(&gap),
        "published before its transaction committed"
    );
    slow_tx.commit().await.unwrap();

    wait_relayed(&h, &status).await;
    assert_stream_holds_every_event_once(&h, tuning.shards).await;
    project_and_verify(&h, &tuning).await;
    stop.cancel();
    task.await.unwrap();
}

/// Runs a relay while `plan` is written, until it has published every event.
async fn publish_with_a_relay(
    h: &Harness,
    tuning: &projector::ProjectorSettings,
    plan: test_support::events::Plan,
) {
    let r = relay(h, tuning);
    let status = r.status();
    let stop = CancellationToken::new();
    let task = tokio::spawn(r.run(stop.clone()));
    h.write(plan, 2).await;
    wait_relayed(h, &status).await;
    stop.cancel();
    task.await.unwrap();
}

/// Projects what the relay published (with the relay of the test still running) and
/// verifies the read model against the event store.
async fn project_and_verify(h: &Harness, tuning: &projector::ProjectorSettings) {
    let projector = h
        .start(
            "projector",
            projector::ProjectorSettings {
                relay_enabled: false,
                ..tuning.clone()
            },
        )
        .await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_killed_and_restarted_mid_run_publishes_no_duplicates() {
    let h = Harness::new().await;
    let mut tuning = h.tuning();
    tuning.relay_batch = 20;
    let writers = {
        let plan = plan(12, 120);
        let writer = h.writer.clone();
        tokio::spawn(async move { writer.write(plan, 3).await })
    };
    // Two relays compete; one leads. Kill the leader (abort drops its lock connection)
    // several times while events arrive.
    let mut relays = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = relay(&h, &tuning);
        statuses.push(r.status());
        let stop = CancellationToken::new();
        relays.push((stop.clone(), tokio::spawn(r.run(stop))));
    }
    let mut kills = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !writers.is_finished() || kills < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no relay took the lead ({kills} kills so far)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let leaders: Vec<usize> = (0..statuses.len())
            .filter(|i| statuses[*i].borrow().leader)
            .collect();
        assert!(leaders.len() <= 1, "two relays lead at once: {leaders:?}");
        if let Some(&i) = leaders.first() {
            relays[i].1.abort();
            kills += 1;
            let r = relay(&h, &tuning);
            statuses[i] = r.status();
            let stop = CancellationToken::new();
            relays[i] = (stop.clone(), tokio::spawn(r.run(stop)));
        }
    }
    writers.await.unwrap();

    // A relay that crashed after its XADDs but before storing its cursor: rewind the cursor.
    // Re-publishing must be refused by Redis, not duplicated.
    sqlx::query("UPDATE relay_checkpoint SET tx_id = 0, global_position = 0")
        .execute(&h.pool)
        .await
        .unwrap();
    for (stop, task) in relays.drain(..) {
        stop.cancel();
        let _ = task.await;
    }
    let r = relay(&h, &tuning);
    let status = r.status();
    let stop = CancellationToken::new();
    let task = tokio::spawn(r.run(stop.clone()));
    wait_relayed(&h, &status).await;
    assert!(
        status.borrow().refused > 0,
        "re-published entries were refused"
    );
    assert_stream_holds_every_event_once(&h, tuning.shards).await;
    project_and_verify(&h, &tuning).await;
    stop.cancel();
    task.await.unwrap();
    // Published again from a cursor set back, killed and replaced: each head still counts
    // every event of its shard once.
    assert_heads_count_their_events(&h, tuning.shards).await;

    // Published past the projector's checkpoints; then heads without counts and events
    // without keys, as a store upgraded to V13 has them: a starting relay counts each head
    // from the furthest checkpoint below it and the events between, and keeps counting.
    publish_with_a_relay(&h, &tuning, plan(13, 40)).await;
    let forget = "UPDATE relay_shard_heads SET published = NULL; \
                  UPDATE events SET shard_key = NULL";
    sqlx::raw_sql(forget).execute(&h.pool).await.unwrap();
    publish_with_a_relay(&h, &tuning, plan(14, 40)).await;
    assert_heads_count_their_events(&h, tuning.shards).await;
    // Without a checkpoint, from the start of the store.
    sqlx::raw_sql(&format!("{forget}; DELETE FROM projection_checkpoints"))
        .execute(&h.pool)
        .await
        .unwrap();
    publish_with_a_relay(&h, &tuning, plan(15, 20)).await;
    assert_heads_count_their_events(&h, tuning.shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projected_read_models_equal_a_direct_computation_over_the_event_store() {
    let h = Harness::new().await;
    let tuning = h.tuning();
    let app = h.start("replica-a", tuning.clone()).await;
    h.write(plan(21, 150), 4).await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;

    // Acknowledged entries are trimmed (the last delivered one stays).
    let redis = h.redis.clone();
    eventually(WAIT, "streams trimmed", || {
        let mut redis = redis.clone();
        let prefix = h.settings.redis_prefix.clone();
        async move {
            let mut total = 0i64;
            for s in 0..tuning.shards {
                let n: i64 = redis::cmd("XLEN")
                    .arg(projector::stream::stream_key(&prefix, s))
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                total += n;
            }
            (total <= tuning.shards as i64).then_some(())
        }
    })
    .await;
    app.stop().await;
}

/// Shard locks of `version` held in this database, as (distinct holders, locks).
async fn shard_owners(h: &Harness, version: i32) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(DISTINCT pid), count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND granted AND classid::bigint = $1 AND objsubid = 2 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(0x4850_0000i64 + i64::from(version))
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_project_each_event_once_and_keep_per_message_order() {
    let h = Harness::new().await;
    // Records the order in which rows reach message_events, row by row.
    sqlx::raw_sql(
        "CREATE TABLE apply_log (n bigserial, message_id uuid, sequence bigint); \
         CREATE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO apply_log (message_id, sequence) VALUES (NEW.message_id, NEW.sequence); \
           RETURN NEW; END $$; \
         CREATE TRIGGER log_apply AFTER INSERT ON message_events \
           FOR EACH ROW EXECUTE FUNCTION log_apply()",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    let tuning = h.tuning();
    let a = h.start("replica-a", tuning.clone()).await;
    let b = h.start("replica-b", tuning.clone()).await;
    // Every worker of both replicas owns a share of the shards, so both replicas work.
    let workers = 2 * tuning.workers as i64;
    assert!(workers <= tuning.shards as i64);
    eventually(
        WAIT,
        "the shards shared among the replicas' workers",
        || async { (shard_owners(&h, 1).await == (workers, tuning.shards as i64)).then_some(()) },
    )
    .await;
    h.write(plan(31, 200), 4).await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;

    // Both replicas consumed entries.
    let mut redis = h.redis.clone();
    let mut consumers = BTreeSet::new();
    for s in 0..tuning.shards {
        let v: redis::Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(projector::stream::stream_key(&h.settings.redis_prefix, s))
            .arg("projector-v1")
            .query_async(&mut redis)
            .await
            .unwrap();
        for c in projector::stream::value_items(&v) {
            let m = projector::stream::value_map(&c);
            if let Some(name) = m.get("name").and_then(projector::stream::value_text) {
                consumers.insert(name);
            }
        }
    }
    assert!(
        consumers.iter().any(|c| c.starts_with("replica-a-"))
            && consumers.iter().any(|c| c.starts_with("replica-b-")),
        "{consumers:?}"
    );
    // Per-message order at apply time: the log's serial numbers follow the order rows
    // were inserted, inside a batch as across batches and replicas.
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM apply_log")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(logged, h.message_event_count().await);
    let out_of_order: Vec<(String, i64)> = sqlx::query_as(
        "SELECT message_id::text, sequence FROM (SELECT message_id, sequence, \
           n < lag(n) OVER (PARTITION BY message_id ORDER BY sequence) AS bad \
           FROM apply_log) x WHERE bad",
    )
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert!(
        out_of_order.is_empty(),
        "applied before an earlier event of its message: {out_of_order:?}"
    );
    a.stop().await;
    b.stop().await;
}

async fn wait_relay_passed_last_event(h: &Harness) {
    let last: (i64, i64) = sqlx::query_as(
        "SELECT tx_id::text::bigint, global_position FROM events \
         ORDER BY tx_id DESC, global_position DESC LIMIT 1",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    eventually(WAIT, "the relay to publish every event", || async {
        let at: Option<(i64, i64)> =
            sqlx::query_as("SELECT tx_id, global_position FROM relay_checkpoint")
                .fetch_optional(&h.pool)
                .await
                .unwrap();
        at.filter(|at| *at >= last).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_data_lost_mid_run_is_recovered_from_the_event_store() {
    let h = Harness::new().await;
    let tuning = h.tuning();
    let mut relay_only = tuning.clone();
    relay_only.projector_enabled = false;
    let mut projector_only = tuning.clone();
    projector_only.relay_enabled = false;
    let relay = h.start("relay", relay_only).await;
    let mut projector = h.start("projector", projector_only.clone()).await;
    let (p1, rest) = plan(41, 220).split(80);
    let (p2, rest) = rest.split(40);
    let (p3, p4) = rest.split(40);

    // 1. Everything wiped while events flow: each wipe finds keys to delete, comes after
    //    some events were appended and before the last ones are.
    let writer = {
        let w = h.writer.clone();
        tokio::spawn(async move { w.write(p1, 1).await })
    };
    let mut wipes: Vec<(i64, usize)> = Vec::new();
    while wipes.len() < 2 && !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = h.message_event_count().await;
        let deleted = h.wipe_redis().await;
        // On a loaded machine the relay may have published nothing since the last wipe:
        // a wipe that finds nothing to delete loses nothing, and does not count.
        if deleted > 0 {
            wipes.push((before, deleted));
        }
    }
    writer.await.unwrap();
    let after = h.message_event_count().await;
    assert_eq!(
        wipes.len(),
        2,
        "the writes ended before two wipes: {wipes:?}"
    );
    for (before, _) in &wipes {
        assert!(
            *before > 0 && *before < after,
            "a wipe outside the writes: {wipes:?}, {after} events in the end"
        );
    }
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;

    // 2. Entries lost from streams whose groups survive (the cursor jumps): the next entry
    //    names a predecessor the projector never saw.
    projector.stop().await;
    h.write(p2, 2).await;
    wait_relay_passed_last_event(&h).await;
    let mut redis = h.redis.clone();
    for s in 0..tuning.shards {
        let _: i64 = redis::cmd("XTRIM")
            .arg(projector::stream::stream_key(&h.settings.redis_prefix, s))
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    //    Nothing new arrives at first: the idle projector notices it is behind the relay.
    projector = h.start("projector", projector_only.clone()).await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;
    projector.stop().await;
    h.write(p3, 2).await;
    wait_relay_passed_last_event(&h).await;
    for s in 0..tuning.shards {
        let _: i64 = redis::cmd("XTRIM")
            .arg(projector::stream::stream_key(&h.settings.redis_prefix, s))
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    //    Then new events arrive: the first one names a predecessor the projector never saw.
    projector = h.start("projector", projector_only.clone()).await;
    let (p3b, _) = plan(42, 20).split(20);
    h.write(p3b, 2).await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;

    // 3. Everything wiped and nothing new arrives afterwards.
    projector.stop().await;
    h.write(p4, 2).await;
    wait_relay_passed_last_event(&h).await;
    assert!(h.wipe_redis().await > 0);
    projector = h.start("projector", projector_only).await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;
    projector.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_is_parked_its_message_waits_others_flow_and_retry_drains_it() {
    let h = Harness::new().await;
    let tuning = h.tuning();
    let app = h.start("replica-a", tuning.clone()).await;
    let (poisoned, _) = plan(51, 1).messages.remove(0);
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

    let t0 = chrono::DateTime::parse_from_rfc3339("2024-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    use domain::{Channel, ObservationKind::*};
    h.append(
        poisoned,
        test_support::events::submit(
            poisoned,
            test_support::events::TENANTS[0],
            at(0),
            Channel::Email,
            "ses",
            vec!["promo".into()],
        ),
    )
    .await;
    let others = plan(52, 30);
    h.write(others.clone(), 2).await;
    h.append(
        poisoned,
        test_support::events::observe(Dispatched, "p-d", at(1)),
    )
    .await;
    h.append(
        poisoned,
        test_support::events::observe(Delivered, "p-v", at(5)),
    )
    .await;

    // Other messages flow; the poisoned one is parked with its later events held behind it.
    let other_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id <> $1")
            .bind(poisoned.to_string())
            .fetch_one(&h.pool)
            .await
            .unwrap();
    let states = eventually(
        WAIT,
        "the poison event parked and the rest held",
        || async {
            let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(
                "SELECT id, sequence, state, error FROM dead_letters ORDER BY sequence",
            )
            .fetch_all(&h.pool)
            .await
            .unwrap();
            let projected = h.projected_count(1).await;
            (rows.len() == 3 && projected == other_events).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        states
            .iter()
            .map(|r| (r.1, r.2.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "parked"), (2, "held"), (3, "held")]
    );
    assert!(
        states[0].3.contains("poisoned by the test"),
        "{}",
        states[0].3
    );
    let poisoned_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_events WHERE message_id = $1")
            .bind(poisoned)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(poisoned_rows, 0);
    let listed = projector::admin::list(&h.pool, false).await.unwrap();
    assert_eq!(listed.len(), 3);

    // A later event of that message also waits.
    h.append(
        poisoned,
        test_support::events::observe(Opened, "p-o", at(60)),
    )
    .await;
    eventually(WAIT, "the later event held too", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE state = 'held'")
            .fetch_one(&h.pool)
            .await
            .unwrap();
        (n == 3).then_some(())
    })
    .await;

    // Retrying before the fix fails and changes nothing.
    let id = states[0].0;
    assert!(projector::admin::retry(&h.pool, &h.pool, id).await.is_err());
    assert_eq!(
        projector::admin::list(&h.pool, false).await.unwrap().len(),
        4
    );

    // The fix, then a retry drains the message in order.
    sqlx::query("DROP TRIGGER poison ON message_events")
        .execute(&h.pool)
        .await
        .unwrap();
    assert_eq!(
        projector::admin::retry(&h.pool, &h.pool, id).await.unwrap(),
        4
    );
    assert!(projector::admin::list(&h.pool, false)
        .await
        .unwrap()
        .is_empty());
    h.assert_verified(1).await;

    // And the message flows normally again.
    h.append(
        poisoned,
        test_support::events::observe(Clicked, "p-c", at(90)),
    )
    .await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_while_commands_keep_arriving_ends_equal_to_the_live_read_model() {
    let h = Harness::new().await;
    let tuning = h.tuning();
    let app = h.start("replica-a", tuning.clone()).await;
    let (before, during) = plan(61, 200).split(80);
    h.write(before, 3).await;
    h.wait_projected(1, WAIT).await;

    let ctx = h.context(tuning.clone()).await;
    let at_start = h.message_event_count().await;
    let rebuild = async {
        let v = projector::admin::rebuild(&ctx).await;
        (v, h.message_event_count().await)
    };
    let (written, (version, at_end)) = tokio::join!(h.write(during, 2), rebuild);
    // The commands really arrived while the rebuild ran: some before it ended, and it
    // did not end before they began.
    assert!(
        at_end > at_start,
        "no event was appended during the rebuild ({at_start} before, {at_end} after)"
    );
    assert!(written > 0);
    let version = version.unwrap();
    assert_eq!(version, 2);
    let active: i32 = sqlx::query_scalar("SELECT version FROM read_model_active")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(active, 2);

    h.wait_projected(2, WAIT).await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(2).await;
    h.assert_verified(1).await;
    // Row for row, the rebuilt version equals the one projected live.
    for (table, columns) in [
        (
            "message_events",
            "tenant_id, message_id, sequence, global_position, event_type, status, \
             previous_status, channel, provider, tags, occurred_at, latency_ms_from_submit, \
             latency_ms_from_dispatch, traceparent",
        ),
        (
            "messages",
            "message_id, tenant_id, status, tags, submitted_at, dispatched_at, delivered_at, \
             bounced_at, failed_at, opened_at, clicked_at, latency_ms_from_submit, \
             latency_ms_from_dispatch, last_sequence",
        ),
        ("message_rollup_15m", read_model::rollup::COLUMNS),
        ("message_rollup_1h", read_model::rollup::COLUMNS),
        ("message_rollup_1d", read_model::rollup::COLUMNS),
    ] {
        let rows = format!("{table} WHERE");
        let diff: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM ( \
               (SELECT {columns} FROM {rows} version = 1 EXCEPT ALL \
                SELECT {columns} FROM {rows} version = 2) UNION ALL \
               (SELECT {columns} FROM {rows} version = 2 EXCEPT ALL \
                SELECT {columns} FROM {rows} version = 1)) d"
        ))
        .fetch_one(&h.pool)
        .await
        .unwrap();
        assert_eq!(
            diff, 0,
            "{table} differs between the live and the rebuilt version"
        );
    }

    // Retiring the old version stops it and removes its rows.
    projector::admin::retire(&ctx, 1).await.unwrap();
    assert_eq!(h.projected_count(1).await, 0);
    assert!(
        projector::admin::retire(&ctx, 2).await.is_err(),
        "the active version stays"
    );
    app.stop().await;
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Killable(std::process::Child);

impl Killable {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The built `projector` binary serving this test's database and prefix.
fn spawn_projector(h: &Harness, instance: &str) -> Killable {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .env("HERALD_DATABASE_URL", &h.db.url)
        .env("HERALD_READ_DATABASE_URL", "")
        .env("HERALD_REDIS_URL", &h.settings.redis_url)
        .env("HERALD_REDIS_PREFIX", &h.settings.redis_prefix)
        .env("HERALD_PROJECTOR_ADDR", "127.0.0.1:0")
        .env("HERALD_PUSHGATEWAY_URL", "")
        .env("HERALD_INSTANCE_ID", instance)
        .env("HERALD_LOG_FORMAT", "json")
        .env("RUST_LOG", "error")
        .env("HERALD_RELAY_POLL_MS", "50")
        .env("HERALD_RELAY_BATCH", "100")
        .env("HERALD_RELAY_TRIM_INTERVAL_MS", "300")
        .env("HERALD_PROJECTOR_BLOCK_MS", "200")
        .env("HERALD_PROJECTOR_BATCH", "50")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the projector binary");
    Killable(child)
}

/// Stream entries delivered to `instance`'s consumers and never acknowledged, over every
/// shard of version 1's group.
#[tokio::test]
async fn a_rebuild_reading_an_undecodable_event_parks_it_and_builds_everything_else() {
    let h = Harness::new().await;
    let written = plan(71, 60);
    let (poisoned, _) = written
        .messages
        .iter()
        .find(|(_, commands)| commands.len() >= 3)
        .cloned()
        .expect("a message with several commands");
    h.write(written, 2).await;
    // One stored event that no longer decodes (a payload edited by hand, say): the whole
    // read it belongs to cannot go in at once.
    let edited = sqlx::query(
        "UPDATE events SET payload = '{\"MessageDelivered\": {\"broken\": true}}' \
          WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(poisoned.to_string())
    .execute(&h.pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(edited, 1);
    wait_horizon_past_events(&h).await;

    // Reads of 10 events: the window holding the reads before the undecodable one commits
    // them, that read goes shard by shard, and a new window takes the reads after it.
    let ctx = h
        .context(projector::ProjectorSettings {
            rebuild_read: 10,
            ..h.tuning()
        })
        .await;
    let version = projector::admin::rebuild(&ctx).await.unwrap();
    let dead: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT message_id, sequence, state FROM dead_letters WHERE version = $1 \
          ORDER BY sequence",
    )
    .bind(version)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        dead.first(),
        Some(&(poisoned.to_string(), 2, "parked".to_string()))
    );
    assert!(
        dead.iter().all(|(m, _, _)| *m == poisoned.to_string()),
        "only the poisoned message waits: {dead:?}"
    );
    // Every other message is in the new version, exactly; the oracle counts the parked and
    // held events as dead letters, not as differences.
    let report = h.verify(version).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.dead_lettered as usize, dead.len());
    let others: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT message_id) FROM messages WHERE version = $1 AND message_id <> $2",
    )
    .bind(version)
    .bind(poisoned)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(others, 59);
}

/// A rebuild's windows only decide how often rollup rows are written: one read per window
/// or every read in one, the version ends equal to the event store, and the two versions
/// hold the same rollup rows.
#[tokio::test]
async fn a_rebuild_ends_equal_to_the_store_whatever_its_windows_hold() {
    let h = Harness::new().await;
    h.write(plan(73, 80), 2).await;
    wait_horizon_past_events(&h).await;
    let mut versions = Vec::new();
    for window in [Duration::ZERO, Duration::from_secs(600)] {
        let ctx = h
            .context(projector::ProjectorSettings {
                rebuild_read: 7,
                rebuild_window: window,
                ..h.tuning()
            })
            .await;
        let version = projector::admin::rebuild(&ctx).await.unwrap();
        let report = h.verify(version).await;
        assert!(report.is_clean(), "window {window:?}: {report}");
        versions.push(version);
    }
    for level in read_model::rollup::Level::ALL {
        let table = level.table();
        let columns = "tenant_id, bucket, channel, provider, tag, entered, engaged, \
                       engaged_first, submit_sketch, dispatch_sketch";
        let (rows, differing): (i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM {table} WHERE version = $1), count(*) FROM ( \
               (SELECT {columns} FROM {table} WHERE version = $1 \
                EXCEPT ALL SELECT {columns} FROM {table} WHERE version = $2) \
               UNION ALL \
               (SELECT {columns} FROM {table} WHERE version = $2 \
                EXCEPT ALL SELECT {columns} FROM {table} WHERE version = $1)) d"
        ))
        .bind(versions[0])
        .bind(versions[1])
        .fetch_one(&h.pool)
        .await
        .unwrap();
        assert!(rows > 0, "{table} holds rows");
        assert_eq!(differing, 0, "{table} differs between the two builds");
    }
}

/// A dry run applies the store's events as a rebuild's first pass would, says how many and
/// how fast, and keeps nothing: no version, row or checkpoint.
#[tokio::test]
async fn a_rebuild_dry_run_measures_a_sample_and_keeps_nothing() {
    let h = Harness::new().await;
    h.write(plan(74, 40), 2).await;
    wait_horizon_past_events(&h).await;
    let ctx = h
        .context(projector::ProjectorSettings {
            rebuild_read: 7,
            ..h.tuning()
        })
        .await;
    let read_side = || async {
        sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
            "SELECT (SELECT count(*) FROM read_model_versions), \
                    (SELECT count(*) FROM message_events), (SELECT count(*) FROM messages), \
                    (SELECT count(*) FROM message_rollup_15m), \
                    (SELECT count(*) FROM projection_checkpoints)",
        )
        .fetch_one(&h.pool)
        .await
        .unwrap()
    };
    let before = read_side().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    // A sample longer than the store takes to apply covers all of it.
    let estimate = projector::admin::estimate(&ctx, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(estimate.events, stored);
    assert_eq!(estimate.sampled, stored as u64);
    assert!(estimate.rate() > 0.0, "{estimate}");
    assert!(estimate
        .to_string()
        .contains(&format!("{stored} events in the event store")));
    assert_eq!(read_side().await, before, "the dry run kept something");

    // While a build holds the lock, a dry run is refused.
    let _lock = projector::admin::RebuildLock::try_take(&h.pool)
        .await
        .unwrap()
        .expect("free");
    let refused = projector::admin::estimate(&ctx, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("a read-model build is running"),
        "{refused}"
    );
}

/// Waits until every open transaction is past the written events: a rebuild reads only
/// below that commit-safe horizon, and transactions elsewhere on the cluster can hold it
/// back for a moment.
async fn wait_horizon_past_events(h: &Harness) {
    eventually(WAIT, "the horizon to pass the written events", || async {
        let past: bool = sqlx::query_scalar(
            "SELECT pg_snapshot_xmin(pg_current_snapshot()) > max(tx_id) FROM events",
        )
        .fetch_one(&h.pool)
        .await
        .unwrap();
        past.then_some(())
    })
    .await;
}

async fn unacknowledged_of(h: &Harness, instance: &str) -> i64 {
    let mut redis = h.redis.clone();
    let mut total = 0;
    for shard in 0..h.settings.stream_shards {
        let key = projector::stream::stream_key(&h.settings.redis_prefix, shard);
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(&key)
            .arg(projector::stream::group_name(1))
            .query_async(&mut redis)
            .await
            .unwrap_or(redis::Value::Nil);
        let redis::Value::Array(parts) = summary else {
            continue;
        };
        let Some(redis::Value::Array(consumers)) = parts.get(3) else {
            continue;
        };
        for c in consumers {
            let redis::Value::Array(pair) = c else {
                continue;
            };
            let name = pair.first().and_then(projector::stream::value_text);
            let count = pair.get(1).and_then(projector::stream::value_text);
            if name.is_some_and(|n| n.starts_with(&format!("{instance}-"))) {
                total += count.and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projector_killed_with_sigkill_mid_batch_under_load_loses_and_doubles_nothing() {
    let h = Harness::new().await;
    // Commands keep arriving until the kills are done, so every process has work.
    let writing = CancellationToken::new();
    let writers = {
        let (writer, writing) = (h.writer.clone(), writing.clone());
        tokio::spawn(async move {
            let mut round = 0;
            while !writing.is_cancelled() && round < 40 {
                writer.write(plan(71 + round, 40), 3).await;
                round += 1;
            }
        })
    };
    // Each process is killed (SIGKILL: no shutdown, no final ack) while it is projecting:
    // after it has visibly made progress, a few milliseconds into its next batches. A kill
    // "landed mid-batch" when the dead consumer still owns entries it read and never
    // acknowledged: it was between reading a batch and acknowledging its commit.
    let (mut under_load, mut mid_batch) = (0, 0);
    for i in 0..20u64 {
        if mid_batch >= 3 && under_load >= 3 {
            break;
        }
        let instance = format!("killed-{i}");
        let mut child = spawn_projector(&h, &instance);
        let before = h.projected_count(1).await;
        eventually(WAIT, "the projector process to make progress", || async {
            (h.projected_count(1).await > before).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20 + 37 * (i % 4))).await;
        let loaded = !writers.is_finished();
        child.kill(); // SIGKILL
        if loaded {
            under_load += 1;
        }
        if unacknowledged_of(&h, &instance).await > 0 {
            mid_batch += 1;
        }
    }
    writing.cancel();
    assert!(
        under_load >= 3,
        "only {under_load} kills happened while commands arrived"
    );
    assert!(
        mid_batch >= 3,
        "only {mid_batch} kills landed between reading a batch and acknowledging it"
    );
    writers.await.unwrap();
    let mut last = spawn_projector(&h, "survivor");
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;
    last.kill();
}

#[tokio::test]
async fn the_sql_shard_function_agrees_with_the_rust_one() {
    let db = test_support::TestDb::migrated().await;
    let pool = db.pool().await;
    let ids: Vec<String> = (0..500)
        .map(|i| {
            if i % 2 == 0 {
                Uuid::new_v4().to_string()
            } else {
                format!("message-{i}-é")
            }
        })
        .collect();
    for shards in [1u32, 4, 7, 64] {
        let sql: Vec<i32> = sqlx::query_scalar(
            "SELECT herald_shard(id, $2) FROM unnest($1::text[]) WITH ORDINALITY AS t(id, n) \
             ORDER BY n",
        )
        .bind(&ids)
        .bind(shards as i32)
        .fetch_all(&pool)
        .await
        .unwrap();
        let rust: Vec<i32> = ids.iter().map(|id| shard_of(id, shards) as i32).collect();
        assert_eq!(sql, rust, "shards = {shards}");
        // The key every event row stores gives the same shard without hashing.
        let stored: Vec<i32> = sqlx::query_scalar(
            "SELECT (herald_shard_key(id) % $2)::int FROM unnest($1::text[]) \
             WITH ORDINALITY AS t(id, n) ORDER BY n",
        )
        .bind(&ids)
        .bind(i64::from(shards))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(stored, rust, "shards = {shards}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skipping_a_poison_event_applies_the_events_held_behind_it() {
    let h = Harness::new().await;
    let app = h.start("replica-a", h.tuning()).await;
    let id = Uuid::new_v4();
    // Only the submission is poisonous.
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.message_id = '{id}' AND NEW.sequence = 1 THEN RAISE EXCEPTION 'bad submit'; \
         END IF; RETURN NEW; END $$; \
         CREATE TRIGGER poison BEFORE INSERT ON message_events \
         FOR EACH ROW EXECUTE FUNCTION poison()"
    ))
    .execute(&h.pool)
    .await
    .unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2024-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    use domain::{Channel, ObservationKind::*};
    h.append(
        id,
        test_support::events::submit(
            id,
            test_support::events::TENANTS[1],
            t0,
            Channel::Sms,
            "twilio",
            vec![],
        ),
    )
    .await;
    h.append(
        id,
        test_support::events::observe(Dispatched, "s-d", t0 + chrono::Duration::seconds(1)),
    )
    .await;
    h.append(
        id,
        test_support::events::observe(Delivered, "s-v", t0 + chrono::Duration::seconds(4)),
    )
    .await;
    let parked = eventually(WAIT, "parked and held", || async {
        let rows = projector::admin::list(&h.pool, false).await.unwrap();
        (rows.len() == 3).then_some(rows)
    })
    .await;
    assert_eq!(parked[0].state, "parked");
    assert!(parked[0].error.contains("bad submit"));
    // Held rows cannot be retried on their own.
    assert!(projector::admin::retry(&h.pool, &h.pool, parked[1].id)
        .await
        .is_err());

    assert_eq!(
        projector::admin::skip(&h.pool, &h.pool, parked[0].id)
            .await
            .unwrap(),
        2
    );
    let rows: Vec<i64> = sqlx::query_scalar(
        "SELECT sequence FROM message_events WHERE message_id = $1 ORDER BY sequence",
    )
    .bind(id)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![2, 3],
        "the skipped event stays out, the held ones are in"
    );
    let (status, last): (String, i64) =
        sqlx::query_as("SELECT status, last_sequence FROM messages WHERE message_id = $1")
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), last), ("delivered", 3));
    let all = projector::admin::list(&h.pool, true).await.unwrap();
    let states: Vec<&str> = all.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(states, vec!["skipped", "resolved", "resolved"]);
    // The read model is what the event store says, less the one skipped event.
    let report = h.verify(1).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!((report.applied, report.dead_lettered), (2, 1));
    app.stop().await;
}

#[tokio::test]
async fn the_binary_runs_operator_commands_and_refuses_unknown_ones() {
    let h = Harness::new().await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_projector"))
            .args(args)
            .env("HERALD_DATABASE_URL", &h.db.url)
            .env("HERALD_READ_DATABASE_URL", "")
            .env("HERALD_REDIS_URL", &h.settings.redis_url)
            .env("HERALD_REDIS_PREFIX", &h.settings.redis_prefix)
            .env("HERALD_PUSHGATEWAY_URL", "")
            .env("HERALD_LOG_FORMAT", "json")
            .env("RUST_LOG", "error")
            .output()
            .expect("run the projector binary")
    };
    let out = run(&["dead-letters", "list"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("id\tversion\tstate"));
    let out = run(&["dead-letters", "retry", "12345"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dead letter 12345"));
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trimming_keeps_every_entry_a_live_group_still_needs() {
    let h = Harness::new().await;
    let tuning = h.tuning();
    let r = relay(&h, &tuning);
    let relay_status = r.status();
    let relay_stop = CancellationToken::new();
    let relay_task = tokio::spawn(r.run(relay_stop.clone()));
    let only = projector::ProjectorSettings {
        relay_enabled: false,
        ..tuning.clone()
    };
    let projector = h.start("projector", only.clone()).await;
    let (first, second) = plan(81, 100).split(50);
    h.write(first, 2).await;
    h.wait_projected(1, WAIT).await;
    // Acknowledged entries go: the trimmer is active.
    let total = all_cursors(&h).await.len();
    eventually(WAIT, "acknowledged entries trimmed", || async {
        (h.stream_entries(tuning.shards).await.len() <= tuning.shards as usize).then_some(())
    })
    .await;

    // With the projector stopped, nothing it has not acknowledged may go: new entries
    // arrive, and the trimmer runs several rounds over them.
    projector.stop().await;
    h.write(second, 2).await;
    wait_relay_passed_last_event(&h).await;
    let rounds = relay_status.borrow().trims;
    eventually(
        WAIT,
        "three trimming rounds over the unconsumed entries",
        || {
            let now = relay_status.borrow().trims;
            async move { (now >= rounds + 3).then_some(()) }
        },
    )
    .await;
    let in_stream: BTreeSet<Cursor> = h
        .stream_entries(tuning.shards)
        .await
        .into_iter()
        .map(|(_, e)| e.event.cursor)
        .collect();
    let mut needed = 0;
    for (cursor, aggregate) in all_cursors(&h).await {
        let shard = shard_of(&aggregate, tuning.shards);
        let cp = read_model::checkpoint::get(&h.pool, 1, shard)
            .await
            .unwrap();
        if cursor > cp {
            needed += 1;
            assert!(
                in_stream.contains(&cursor),
                "{cursor} trimmed before it was projected"
            );
        }
    }
    assert!(needed > 0 && needed < all_cursors(&h).await.len() && total > 0);
    let projector = h.start("projector", only).await;
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;
    projector.stop().await;
    relay_stop.cancel();
    relay_task.await.unwrap();
}

/// Waits (bounded) until `app` answers readiness 503 with `check` among the failed ones.
async fn unready_naming(client: &reqwest::Client, app: &test_support::RunningApp, check: &str) {
    eventually(WAIT, &format!("readiness to fail on {check}"), || async {
        let r = client.get(app.url("/health/ready")).send().await.ok()?;
        if r.status() != 503 {
            return None;
        }
        let report: serde_json::Value = r.json().await.ok()?;
        report["failed"]
            .as_array()?
            .iter()
            .any(|c| c == check)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_and_database_outages_delay_delivery_but_lose_nothing() {
    use test_support::{url_socket_addr, TcpProxy};
    let h = Harness::new().await;
    let redis_addr = h
        .settings
        .redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("the test Redis URL is redis://host:port");
    let redis_proxy = TcpProxy::start(redis_addr).await;
    let db_proxy = TcpProxy::start(url_socket_addr(&h.db.url)).await;
    let mut settings = h.replica_settings("replica-a");
    settings.redis_url = format!("redis://{}", redis_proxy.addr());
    settings.database_url = h.db.url_via(db_proxy.addr());
    settings.read_database_url = settings.database_url.clone();
    let app =
        test_support::RunningApp::spawn(projector::build_with(settings, h.tuning()).await.unwrap());
    let (p1, rest) = plan(91, 120).split(40);
    let (p2, p3) = rest.split(40);
    h.write(p1, 2).await;
    h.wait_projected(1, WAIT).await;

    // Redis goes away while commands keep arriving (they go straight to the event store).
    // The projector must notice (readiness names Redis) rather than seem healthy, the new
    // events must be in the store and not yet in the read model, and once Redis is back
    // every one of them arrives exactly once.
    let client = reqwest::Client::new();
    redis_proxy.cut();
    let stored_before = h.message_event_count().await;
    h.write(p2, 2).await;
    assert!(h.message_event_count().await > stored_before);
    unready_naming(&client, &app, "redis").await;
    assert!(
        h.projected_count(1).await < h.message_event_count().await,
        "the events written during the outage were projected without Redis"
    );
    redis_proxy.restore();
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;

    // The database goes away from the projector (the writers reach it directly).
    db_proxy.cut();
    h.write(p3, 2).await;
    unready_naming(&client, &app, "database").await;
    assert!(h.projected_count(1).await < h.message_event_count().await);
    db_proxy.restore();
    h.wait_projected(1, WAIT).await;
    h.assert_verified(1).await;
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(parked, 0, "an outage never parks events");
    app.stop().await;
}

#[tokio::test]
async fn catching_up_a_version_retired_under_it_stops_instead_of_reading_for_ever() {
    let h = Harness::new().await;
    let tuning = h.tuning();
    // A projector sets version 1 up and projects the first events; what comes after it
    // stopped is for the catch-up.
    let (first, rest) = plan(67, 40).split(10);
    let app = h.start("replica-a", tuning.clone()).await;
    h.write(first, 1).await;
    h.wait_projected(1, WAIT).await;
    app.stop().await;
    let projected = h.projected_count(1).await;
    h.write(rest, 2).await;
    let ctx = h.context(tuning.clone()).await;
    // Retired as `projector retire` would leave it, had a newer version become active.
    sqlx::query("UPDATE read_model_versions SET state = 'retired' WHERE version = 1")
        .execute(&h.pool)
        .await
        .unwrap();
    // Every batch of a retired version is skipped whole, so its checkpoints never move;
    // the catch-up must notice that and stop (a timeout here means it spun).
    for shard in 0..tuning.shards {
        let caught_up =
            tokio::time::timeout(WAIT, projector::catch_up::catch_up(&ctx, 1, shard, None))
                .await
                .expect("the catch-up of a retired version ended");
        caught_up.unwrap();
    }
    assert_eq!(
        h.projected_count(1).await,
        projected,
        "a retired version got rows"
    );
}
