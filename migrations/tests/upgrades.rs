//! Every migration upgrades a populated store in place: each test builds the schema of the
//! release before it, fills it with data, and upgrades.

use std::time::Duration;

use test_support::TestDb;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn v6_gives_existing_dead_letters_their_tenant_and_commit_time() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(5)).await.unwrap();
    let pool = db.pool().await;
    let tenant = "6f1c2a9e-5d3b-4c8e-9a71-3e0b8d4f2c55";
    // Two events, one with a tenant id that is not a UUID (stores written by hand).
    for (id, meta) in [
        ("m-1", format!(r#"{{"tenant_id": "{tenant}"}}"#)),
        ("m-2", r#"{"tenant_id": "not-a-uuid"}"#.to_string()),
    ] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) VALUES ('Message', $1, 1, 'MessageSubmitted', '1', '{}', $2::jsonb)",
        )
        .bind(id)
        .bind(meta)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO dead_letters (version, shard, message_id, sequence, tx_id, global_position, \
         event_type, state, error) \
         SELECT 1, 0, aggregate_id, 1, tx_id::text::bigint, global_position, event_type, 'parked', 'boom' \
           FROM events",
    )
    .execute(&pool)
    .await
    .unwrap();

    let report = migrations::run(&db.url, WAIT).await.unwrap();
    assert!(
        report.applied.iter().any(|m| m.starts_with("V6__")),
        "{report:?}"
    );
    let rows: Vec<(String, Option<uuid::Uuid>, bool)> = sqlx::query_as(
        "SELECT d.message_id, d.tenant_id, d.recorded_at = e.recorded_at FROM dead_letters d \
           JOIN events e USING (global_position) ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("m-1".to_string(), Some(tenant.parse().unwrap()), true),
            ("m-2".to_string(), None, true),
        ]
    );
}

#[tokio::test]
async fn v8_gives_existing_read_model_versions_the_first_generation_and_rebuilds_nothing() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(7)).await.unwrap();
    let pool = db.pool().await;
    // A store with a rebuilt, active version 2 and the retired version 1.
    sqlx::raw_sql(
        "INSERT INTO read_model_versions (version, state, live_at) VALUES (2, 'live', now()); \
         UPDATE read_model_active SET version = 2; \
         UPDATE read_model_versions SET state = 'retired', retired_at = now() WHERE version = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    migrations::run_to(&db.url, WAIT, Some(8)).await.unwrap();
    let versions: Vec<(i32, String, i32)> = sqlx::query_as(
        "SELECT version, state, generation FROM read_model_versions ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        versions,
        vec![(1, "retired".into(), 1), (2, "live".into(), 1)]
    );
    let g = read_model::versions::generations(&pool).await.unwrap();
    assert_eq!((g.required, g.active, g.active_generation), (1, 2, 1));
    assert!(!g.behind());
    // What a read-model-changing migration does.
    let raised: i32 = sqlx::query_scalar("SELECT herald_read_model_changed('a new rollup')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(raised, 2);
    let g = read_model::versions::generations(&pool).await.unwrap();
    assert!(g.behind() && g.reason == "a new rollup" && g.candidate.is_none());
}

#[tokio::test]
async fn v9_asks_a_store_with_events_for_a_rebuild_and_relabels_an_empty_one() {
    // With events: version 1 stays generation 1, and generation 2 is required.
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(8)).await.unwrap();
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Message', 'm-1', 1, 'MessageSubmitted', '2', '{}', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    migrations::run_to(&db.url, WAIT, Some(9)).await.unwrap();
    let g = read_model::versions::generations(&pool).await.unwrap();
    assert_eq!((g.required, g.active, g.active_generation), (2, 1, 1));
    assert!(g.behind() && g.reason.contains("15 minutes, 1 hour and 1 day"));
    // The generation-1 tables keep their rows (queries read them until the switch).
    let old: bool = sqlx::query_scalar("SELECT to_regclass('message_stats_15m') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(old);

    // Without: nothing to rebuild, the version is relabelled.
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(8)).await.unwrap();
    migrations::run_to(&db.url, WAIT, Some(9)).await.unwrap();
    let pool = db.pool().await;
    let g = read_model::versions::generations(&pool).await.unwrap();
    assert_eq!((g.required, g.active, g.active_generation), (2, 1, 2));
    assert!(!g.behind());
}

#[tokio::test]
async fn v10_drops_the_payload_copy_and_keeps_every_timeline_row() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(9)).await.unwrap();
    let pool = db.pool().await;
    let tenant = uuid::Uuid::new_v4();
    let message = uuid::Uuid::new_v4();
    // Two projected events of one message, as the previous release wrote them.
    for sequence in [1i64, 2] {
        sqlx::query(
            "INSERT INTO message_events (version, tenant_id, message_id, sequence, \
             global_position, tx_id, event_type, event_version, status, status_changed, \
             channel, provider, tags, occurred_at, received_at, recorded_at, payload) \
             VALUES (1, $1, $2, $3, $3, 100 + $3, 'MessageSubmitted', '2', 'queued', true, \
             'email', 'ses', '{promo}', now(), now(), now(), \
             '{\"MessageSubmitted\": {\"to\": \"someone@example.com\"}}')",
        )
        .bind(tenant)
        .bind(message)
        .bind(sequence)
        .execute(&pool)
        .await
        .unwrap();
    }
    let report = migrations::run_to(&db.url, WAIT, Some(10)).await.unwrap();
    assert!(
        report.applied.iter().any(|m| m.starts_with("V10__")),
        "{report:?}"
    );
    let payload: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
          WHERE table_name = 'message_events' AND column_name = 'payload')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!payload, "message_events still copies the payload");
    let kept: Vec<(i64, String, Vec<String>)> = sqlx::query_as(
        "SELECT sequence, status, tags FROM message_events WHERE message_id = $1 ORDER BY 1",
    )
    .bind(message)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        kept,
        vec![
            (1, "queued".to_string(), vec!["promo".to_string()]),
            (2, "queued".to_string(), vec!["promo".to_string()]),
        ]
    );
}

/// A sketch in the layout V11 stored (replaced by V15's): for each bin, ascending, its
/// `int4` then its samples' `int8`, big-endian.
fn v11_sketch(pairs: &[(i32, i64)]) -> Vec<u8> {
    pairs
        .iter()
        .flat_map(|(bin, n)| bin.to_be_bytes().into_iter().chain(n.to_be_bytes()))
        .collect()
}

#[tokio::test]
async fn v11_turns_every_stored_sketch_into_its_bytes_and_keeps_the_counts() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(10)).await.unwrap();
    let pool = db.pool().await;
    let tenant = uuid::Uuid::new_v4();
    // Rows as the previous release wrote them, at every level: sketches with bins out of
    // SQL's sort order for text (negative, zero bin), one empty, one without any sketch.
    for (table, submit, dispatch) in [
        (
            "message_rollup_15m",
            "'{-2147483648,5,231}', '{3,1,7}'",
            "'{}', '{}'",
        ),
        ("message_rollup_1h", "'{231}', '{2}'", "'{9,10}', '{1,1}'"),
        ("message_rollup_1d", "'{}', '{}'", "'{}', '{}'"),
    ] {
        sqlx::query(&format!(
            "INSERT INTO {table} (version, tenant_id, bucket, channel, provider, tag, entered, \
             engaged, engaged_first, submit_bins, submit_counts, dispatch_bins, dispatch_counts) \
             VALUES (1, $1, '2024-03-01T00:00:00Z', 'email', 'ses', '', '{{0,2,0,0,0,1,0,0,0,0}}', \
             '{{4,0,0,0}}', '{{1,0,0,0}}', {submit}, {dispatch})"
        ))
        .bind(tenant)
        .execute(&pool)
        .await
        .unwrap();
    }
    let report = migrations::run_to(&db.url, WAIT, Some(11)).await.unwrap();
    assert!(
        report.applied.iter().any(|m| m.starts_with("V11__")),
        "{report:?}"
    );
    // (table, entered, submit sketch, dispatch sketch)
    type Row = (String, Vec<i64>, Vec<u8>, Vec<u8>);
    let mut rows: Vec<Row> = Vec::new();
    for table in [
        "message_rollup_15m",
        "message_rollup_1h",
        "message_rollup_1d",
    ] {
        rows.push(
            sqlx::query_as(&format!(
                "SELECT '{table}', entered, submit_sketch, dispatch_sketch FROM {table} \
                 WHERE tenant_id = $1"
            ))
            .bind(tenant)
            .fetch_one(&pool)
            .await
            .unwrap(),
        );
    }
    let sketch = v11_sketch;
    let entered = vec![0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
    assert_eq!(
        rows,
        vec![
            (
                "message_rollup_15m".into(),
                entered.clone(),
                sketch(&[(i32::MIN, 3), (5, 1), (231, 7)]),
                vec![]
            ),
            (
                "message_rollup_1h".into(),
                entered.clone(),
                sketch(&[(231, 2)]),
                sketch(&[(9, 1), (10, 1)])
            ),
            ("message_rollup_1d".into(), entered, vec![], vec![]),
        ]
    );
    // The SQL readers of a sketch agree with the layout.
    let bins: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT bin, samples FROM message_rollup_15m, herald_sketch_bins(submit_sketch) \
         WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(bins, vec![(i32::MIN, 3), (5, 1), (231, 7)]);
    let sum: Vec<u8> = sqlx::query_scalar(
        "SELECT herald_sketch_add(submit_sketch, herald_sketch_of('{5,400}', '{-1,2}')) \
         FROM message_rollup_15m WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sum, sketch(&[(i32::MIN, 3), (231, 7), (400, 2)]));
}

#[tokio::test]
async fn v12_indexes_the_counts_of_populated_rollups_for_index_only_reads() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(11)).await.unwrap();
    let pool = db.pool().await;
    let tenant = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO message_rollup_1h (version, tenant_id, bucket, channel, provider, tag, \
         entered, engaged, engaged_first, submit_sketch, dispatch_sketch) \
         SELECT 1, $1, '2024-03-01T00:00:00Z'::timestamptz + make_interval(hours => h), \
         'email', 'ses', t, '{0,1}', '{2}', '{1}', '', '' \
         FROM generate_series(0, 199) AS h, unnest(ARRAY['', 'promo']) AS t",
    )
    .bind(tenant)
    .execute(&pool)
    .await
    .unwrap();
    migrations::run_to(&db.url, WAIT, Some(12)).await.unwrap();
    sqlx::query("VACUUM ANALYZE message_rollup_1h")
        .execute(&pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    // Planner statistics of a small table favour a sequential scan: ask for the index.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT bucket, channel, provider, entered, engaged, engaged_first \
         FROM message_rollup_1h WHERE version = 1 AND tenant_id = $1 AND tag = '' \
         AND bucket >= '2024-03-02' AND bucket < '2024-03-03'",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Only Scan") && plan.contains("counts_idx"),
        "{plan}"
    );
    let hours: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_rollup_1h WHERE version = 1 AND tenant_id = $1 AND tag = ''",
    )
    .bind(tenant)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(hours, 200);
}

#[tokio::test]
async fn v13_stores_every_event_shard_key_and_leaves_existing_relay_heads_to_be_counted() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(12)).await.unwrap();
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) \
         SELECT 'Message', id, 0, 'MessageAccepted', '1.0', '{}', '{}' \
         FROM (SELECT 'message-' || i || CASE WHEN i % 3 = 0 THEN '-é' ELSE '' END AS id \
               FROM generate_series(1, 300) AS i) ids",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO relay_shard_heads (relay, shard, tx_id, global_position) \
         VALUES ('relay', 0, 5, 100), ('relay', 1, 5, 120)",
    )
    .execute(&pool)
    .await
    .unwrap();
    migrations::run_to(&db.url, WAIT, Some(13)).await.unwrap();

    // Existing rows keep no key (nothing is rewritten); the readers' expression gives each
    // the shard herald_shard does.
    let keyless: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE shard_key IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keyless, 300);
    for shards in [1i64, 4, 7, 64] {
        let differ: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events \
             WHERE coalesce(shard_key, herald_shard_key(aggregate_id)) % $1 \
                   <> herald_shard(aggregate_id, $1::int)",
        )
        .bind(shards)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(differ, 0, "shards = {shards}");
    }
    // A row written after the upgrade gets its key, whatever the writer says.
    let key: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, shard_key) \
         VALUES ('Message', 'abc', 0, 'MessageAccepted', '1.0', '{}', '{}', 7) \
         RETURNING shard_key",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // The first 4 bytes of SHA-256("abc"), ba7816bf.
    assert_eq!(key, 0xba78_16bf);

    // Existing heads are not counted yet.
    let uncounted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relay_shard_heads WHERE published IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(uncounted, 2);
    // A head moved with its count keeps it; one moved without it loses the count.
    sqlx::query(
        "UPDATE relay_shard_heads SET global_position = 130, published = 42 WHERE shard = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE relay_shard_heads SET global_position = 140 WHERE shard = 0")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE relay_shard_heads SET global_position = 150, published = 7 WHERE shard = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    let counts: Vec<(i32, Option<i64>)> =
        sqlx::query_as("SELECT shard, published FROM relay_shard_heads ORDER BY shard")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(counts, vec![(0, None), (1, Some(7))]);
}

#[tokio::test]
async fn v14_gives_existing_tenants_the_default_quotas_and_keeps_their_keys() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(13)).await.unwrap();
    let pool = db.pool().await;
    sqlx::query(
        "INSERT INTO tenants (id, name) \
         SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'tenant-' || i \
         FROM generate_series(1, 20) AS i",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO api_keys (key_hash, tenant_id, key_prefix) \
         SELECT sha256(convert_to(id::text, 'UTF8')), id, 'hrld_x' FROM tenants",
    )
    .execute(&pool)
    .await
    .unwrap();
    migrations::run_to(&db.url, WAIT, Some(14)).await.unwrap();

    // Every tenant keeps its key and has no quota of its own: the defaults apply.
    let found: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT count(k.tenant_id), count(q.tenant_id) \
         FROM api_keys k LEFT JOIN tenant_quotas q ON q.tenant_id = k.tenant_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(found, vec![(20, 0)]);
    // A tenant's own quota: positive values, NULL for the defaults.
    let tenant = "00000000-0000-4000-8000-000000000007";
    sqlx::query("INSERT INTO tenant_quotas (tenant_id, requests_per_second) VALUES ($1::uuid, 5)")
        .bind(tenant)
        .execute(&pool)
        .await
        .unwrap();
    let zero = sqlx::query("UPDATE tenant_quotas SET request_burst = 0 WHERE tenant_id = $1::uuid")
        .bind(tenant)
        .execute(&pool)
        .await;
    assert!(zero.is_err(), "a zero quota was stored");
    let unknown = sqlx::query(
        "INSERT INTO tenant_quotas (tenant_id, requests_per_second) \
         VALUES ('00000000-0000-4000-8000-000000000999', 5)",
    )
    .execute(&pool)
    .await;
    assert!(unknown.is_err(), "a quota for no tenant was stored");
    // Deleting the tenant deletes its quota.
    sqlx::query("DELETE FROM tenants WHERE id = $1::uuid")
        .bind(tenant)
        .execute(&pool)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_quotas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn v15_stores_every_sketch_compactly_uncompressed_and_refuses_the_old_layout() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(14)).await.unwrap();
    let pool = db.pool().await;
    let tenant = uuid::Uuid::new_v4();
    // Sketches of every count width, the zero bin, a negative count, an empty one, and a
    // day row of 500 bins whose old layout PostgreSQL compressed.
    let wide: Vec<(i32, i64)> = (0..500).map(|b| (b, 1_000 + i64::from(b))).collect();
    type Pairs = Vec<(i32, i64)>;
    let rows: Vec<(&str, &str, Pairs, Pairs)> = vec![
        (
            "message_rollup_15m",
            "email",
            vec![(i32::MIN, 3), (5, 1), (231, 127)],
            vec![],
        ),
        (
            "message_rollup_15m",
            "sms",
            vec![(7, -128), (8, 40_000)],
            vec![(9, 1)],
        ),
        (
            "message_rollup_1h",
            "email",
            vec![(231, i64::MAX)],
            vec![(2184, 1)],
        ),
        ("message_rollup_1d", "email", wide.clone(), wide.clone()),
    ];
    for (table, channel, submit, dispatch) in &rows {
        sqlx::query(&format!(
            "INSERT INTO {table} (version, tenant_id, bucket, channel, provider, tag, entered, \
             engaged, engaged_first, submit_sketch, dispatch_sketch) \
             VALUES (1, $1, '2024-03-01T00:00:00Z', $2, 'ses', '', '{{0,1}}', '{{2}}', '{{1}}', $3, $4)"
        ))
        .bind(tenant)
        .bind(channel)
        .bind(v11_sketch(submit))
        .bind(v11_sketch(dispatch))
        .execute(&pool)
        .await
        .unwrap();
    }
    let compressed: bool = sqlx::query_scalar(
        "SELECT pg_column_size(submit_sketch) < length(submit_sketch) FROM message_rollup_1d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        compressed,
        "the old layout of 500 bins was stored compressed"
    );

    migrations::run_to(&db.url, WAIT, Some(15)).await.unwrap();

    let sketch = |pairs: &[(i32, i64)]| read_model::sketch::encoded(pairs).unwrap();
    for (table, channel, submit, dispatch) in &rows {
        let (s, d, entered): (Vec<u8>, Vec<u8>, Vec<i64>) = sqlx::query_as(&format!(
            "SELECT submit_sketch, dispatch_sketch, entered FROM {table} WHERE channel = $1"
        ))
        .bind(channel)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (s, d),
            (sketch(submit), sketch(dispatch)),
            "{table} {channel}"
        );
        assert_eq!(entered, vec![0, 1], "{table} {channel}: counters kept");
        // The SQL reader agrees with the layout.
        let bins: Vec<(i32, i64)> = sqlx::query_as(&format!(
            "SELECT bin, samples FROM {table}, herald_sketch_bins(submit_sketch) WHERE channel = $1"
        ))
        .bind(channel)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(&bins, submit, "{table} {channel}");
    }
    assert_eq!(
        sketch(&rows[0].2).len(),
        1 + 3 * 3,
        "one-byte counts: 3 bytes a bin"
    );
    // The 500-bin day row is now held as it is, in the heap.
    let (size, length): (i32, i32) = sqlx::query_as(
        "SELECT pg_column_size(submit_sketch), length(submit_sketch) FROM message_rollup_1d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(length, 1 + 500 * 4);
    assert!(
        size > length,
        "stored uncompressed: {size} bytes for {length}"
    );
    let targets: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT array_to_string(c.reloptions, ',') FROM pg_class c \
         WHERE c.relname IN ('message_rollup_15m', 'message_rollup_1h', 'message_rollup_1d') \
            OR c.oid IN (SELECT format('%I.%I', chunk_schema, chunk_name)::regclass \
                           FROM timescaledb_information.chunks \
                          WHERE hypertable_name LIKE 'message_rollup_%')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(targets, vec!["toast_tuple_target=8160".to_string()]);

    // Summing and building in SQL speak the new layout.
    let sum: Vec<u8> = sqlx::query_scalar(
        "SELECT herald_sketch_add(submit_sketch, herald_sketch_of('{5,400}', '{-1,2}')) \
         FROM message_rollup_15m WHERE channel = 'email'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sum, sketch(&[(i32::MIN, 3), (231, 127), (400, 2)]));
    let refused = sqlx::query_scalar::<_, Vec<u8>>("SELECT herald_sketch_of('{-5}', '{1}')")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("no latency's bin"),
        "{refused}"
    );
    // A writer of the old layout fails instead of storing what no reader decodes.
    let old =
        sqlx::query("UPDATE message_rollup_15m SET submit_sketch = $1 WHERE channel = 'email'")
            .bind(v11_sketch(&[(5, 1)]))
            .execute(&pool)
            .await
            .unwrap_err();
    assert!(old.to_string().contains("submit_sketch_layout"), "{old}");
}
