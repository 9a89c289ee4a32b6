//! Group commit: many commands' events appended in one transaction.
//!
//! A commit costs a WAL flush, and on this kind of disk a flush costs milliseconds, so one
//! transaction per command caps a service at a few hundred to a thousand commands a second
//! however many clients wait. The appender lets concurrent commands share transactions:
//! whatever has queued up while the previous transaction was committing goes into the next
//! one, as a single multi-row INSERT. Nothing waits on a timer, so an idle service adds no
//! latency, and a busy one batches more.
//!
//! Optimistic concurrency is unchanged: the `(aggregate_type, aggregate_id, sequence)` key
//! still decides who wins a race. The INSERT skips conflicting rows (`ON CONFLICT DO
//! NOTHING`) instead of aborting, so one loser does not fail the whole group; a command
//! with any skipped row is refused as a conflict and its other rows are deleted in the same
//! transaction, so a command's events are appended all or nothing.
//!
//! Sharing a transaction must never mean sharing a failure. When the group's statement
//! fails for any reason that is not an outage (a value the database refuses, a constraint,
//! a bug), the appender cannot tell whose rows were at fault, so it writes the group's
//! commands again one transaction each: every command gets the answer it would have had
//! alone, and one tenant's bad row costs the others a retry, never their write. An outage
//! fails the whole group at once (each command answers "unavailable"; nothing landed).

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::fault::Fault;
use crate::row::EventRow;

/// Why an append did not happen. Nothing of the command was written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AppendError {
    /// Another writer appended at one of these positions first.
    #[error("optimistic-concurrency conflict")]
    Conflict,
    /// The database could not be reached (or a transaction kept losing races): retry.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The database refused this command's rows; retrying the same rows fails the same way.
    #[error("event store refused the events: {0}")]
    Refused(String),
}

/// How an append was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Commands in the transaction that committed this one (1 when it was written alone,
    /// including after its group was isolated).
    pub group: usize,
    /// Whether the command's group failed and it was then written on its own.
    pub isolated: bool,
}

struct Request {
    rows: Vec<EventRow>,
    reply: oneshot::Sender<Result<Committed, AppendError>>,
}

/// Handle to the appender tasks; cheap to clone.
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Request>,
}

impl Appender {
    /// Starts `flushers` tasks appending to `pool` under `aggregate_type`, each
    /// transaction carrying at most `max_rows` rows. Two flushers let one collect while the
    /// other commits. The queue holds at most `4 × max_rows` commands; callers beyond that
    /// wait for room.
    pub fn start(
        pool: PgPool,
        aggregate_type: &'static str,
        flushers: usize,
        max_rows: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Request>(max_rows.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..flushers.max(1) {
            let (pool, rx) = (pool.clone(), rx.clone());
            tokio::spawn(async move {
                while let Some(group) = collect(&rx, max_rows).await {
                    flush(&pool, aggregate_type, group).await;
                }
            });
        }
        Self { tx }
    }

    /// Appends `rows` (one command's events) atomically, sharing a transaction with
    /// whatever else is queued.
    pub async fn append(&self, rows: Vec<EventRow>) -> Result<Committed, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { rows, reply })
            .await
            .map_err(|_| AppendError::Unavailable("appender stopped".into()))?;
        answer
            .await
            .map_err(|_| AppendError::Unavailable("appender dropped the request".into()))?
    }
}

/// Waits for one request, then takes every request already queued, up to `max_rows` rows.
async fn collect(rx: &Mutex<mpsc::Receiver<Request>>, max_rows: usize) -> Option<Vec<Request>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut rows = first.rows.len();
    let mut group = vec![first];
    while rows < max_rows {
        match rx.try_recv() {
            Ok(r) => {
                rows += r.rows.len();
                group.push(r);
            }
            Err(_) => break,
        }
    }
    Some(group)
}

async fn flush(pool: &PgPool, aggregate_type: &str, group: Vec<Request>) {
    let n = group.len();
    let span = tracing::info_span!("event_store.group_commit", commands = n);
    let rows: Vec<&[EventRow]> = group.iter().map(|r| r.rows.as_slice()).collect();
    let outcome = tracing::Instrument::instrument(write(pool, aggregate_type, &rows), span).await;
    let results: Vec<Result<Committed, AppendError>> = match outcome {
        Ok(conflicts) => (0..n)
            .map(|i| {
                if conflicts.contains(&i) {
                    Err(AppendError::Conflict)
                } else {
                    Ok(Committed {
                        group: n,
                        isolated: false,
                    })
                }
            })
            .collect(),
        Err(e) if Fault::of_sqlx(&e) == Fault::Outage => {
            let error = AppendError::Unavailable(e.to_string());
            vec![Err(error); n]
        }
        Err(e) if n == 1 => vec![Err(alone_error(&e))],
        Err(e) => {
            tracing::warn!(commands = n, error = %e, "group commit failed; writing its commands one by one");
            isolate(pool, aggregate_type, &rows).await
        }
    };
    for (request, result) in group.into_iter().zip(results) {
        let _ = request.reply.send(result);
    }
}

/// Writes each command of a failed group in a transaction of its own, so each gets the
/// answer it would have had alone.
async fn isolate(
    pool: &PgPool,
    aggregate_type: &str,
    rows: &[&[EventRow]],
) -> Vec<Result<Committed, AppendError>> {
    let mut out = Vec::with_capacity(rows.len());
    for command in rows {
        let result = match write(pool, aggregate_type, std::slice::from_ref(command)).await {
            Ok(conflicts) if conflicts.is_empty() => Ok(Committed {
                group: 1,
                isolated: true,
            }),
            Ok(_) => Err(AppendError::Conflict),
            Err(e) => Err(alone_error(&e)),
        };
        out.push(result);
    }
    out
}

/// The answer for a command whose own transaction failed.
fn alone_error(e: &sqlx::Error) -> AppendError {
    match Fault::of_sqlx(e) {
        Fault::Outage | Fault::Transient => AppendError::Unavailable(e.to_string()),
        Fault::Poison | Fault::Client => AppendError::Refused(e.to_string()),
    }
}

/// Writes the commands `group` in one transaction; returns the indexes of the commands
/// refused as conflicts.
async fn write(
    pool: &PgPool,
    aggregate_type: &str,
    group: &[&[EventRow]],
) -> Result<HashSet<usize>, sqlx::Error> {
    // Two commands of one group racing for the same stream position: the later one loses
    // before the database is asked, so every key below belongs to exactly one command and
    // RETURNING tells unambiguously whose rows landed.
    let mut failed = HashSet::new();
    let mut claimed: HashSet<(&str, i64)> = HashSet::new();
    for (i, rows) in group.iter().enumerate() {
        if rows
            .iter()
            .any(|r| claimed.contains(&(r.aggregate_id.as_str(), r.sequence)))
        {
            failed.insert(i);
        } else {
            claimed.extend(rows.iter().map(|r| (r.aggregate_id.as_str(), r.sequence)));
        }
    }
    let rows: Vec<&EventRow> = group
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .flat_map(|(_, r)| r.iter())
        .collect();
    let n = rows.len();
    let (mut ids, mut seqs, mut types, mut versions, mut payloads, mut metas) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        ids.push(row.aggregate_id.as_str());
        seqs.push(row.sequence);
        types.push(row.event_type.as_str());
        versions.push(row.event_version.as_str());
        payloads.push(row.payload.as_str());
        metas.push(row.metadata.as_str());
    }
    let mut tx = pool.begin().await?;
    let inserted: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $1, a, s, t, v, p::jsonb, m::jsonb
           FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(a, s, t, v, p, m)
         ON CONFLICT DO NOTHING
         RETURNING aggregate_id, sequence",
    )
    .bind(aggregate_type)
    .bind(&ids)
    .bind(&seqs)
    .bind(&types)
    .bind(&versions)
    .bind(&payloads)
    .bind(&metas)
    .fetch_all(&mut *tx)
    .await?;
    if inserted.len() < n {
        let landed: HashSet<(&str, i64)> = inserted.iter().map(|(a, s)| (a.as_str(), *s)).collect();
        let (mut undo_ids, mut undo_seqs) = (Vec::new(), Vec::new());
        for (i, rows) in group.iter().enumerate() {
            if failed.contains(&i) {
                continue;
            }
            if !rows
                .iter()
                .all(|r| landed.contains(&(r.aggregate_id.as_str(), r.sequence)))
            {
                failed.insert(i);
                for r in rows
                    .iter()
                    .filter(|r| landed.contains(&(r.aggregate_id.as_str(), r.sequence)))
                {
                    undo_ids.push(r.aggregate_id.as_str());
                    undo_seqs.push(r.sequence);
                }
            }
        }
        if !undo_ids.is_empty() {
            // A command is all or nothing: take back the part of a conflicting command
            // that did land, before anyone can see it.
            sqlx::query(
                "DELETE FROM events WHERE aggregate_type = $1
                   AND (aggregate_id, sequence) IN (SELECT * FROM UNNEST($2::text[], $3::bigint[]))",
            )
            .bind(aggregate_type)
            .bind(&undo_ids)
            .bind(&undo_seqs)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(failed)
}
