//! `GET /v1/stats/messages` and `POST /v1/stats/messages:query`: time-bucketed message
//! statistics (see `docs/query-api.md`).

pub mod answer;
pub mod buckets;
pub mod cost;
pub mod engine;
pub mod params;
pub mod rollups;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use service_kit::http_error::{ApiError, ApiJson};
use service_kit::quota::Admission;
use tokio::sync::OwnedSemaphorePermit;

use self::engine::{ComputeError, Source};
use self::params::{Dimension, StatsQuery, MAX_CELLS};
use crate::{db_error, AppState};

/// A computation that outgrew the answer bounds is the client's to narrow.
fn compute_error(e: ComputeError) -> ApiError {
    match e {
        ComputeError::Database(e) => db_error(e),
        ComputeError::TooManyCells { series, buckets } => ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "answer_too_large",
            format!(
                "this query answers at least {series} series × {buckets} buckets, over the \
                 {MAX_CELLS} cells one answer may hold: narrow the range, use a coarser \
                 bucket, filter, or group by fewer dimensions"
            ),
        )
        .with_field("group_by"),
        ComputeError::TooDetailed => ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "answer_too_large",
            format!(
                "the latency percentiles of this query need more than {} sketch bins: use a \
                 coarser bucket or fewer series",
                params::MAX_LATENCY_BINS
            ),
        )
        .with_field("metrics"),
    }
}

/// `GET /v1/stats/messages`.
pub async fn get_stats(
    State(state): State<Arc<AppState>>,
    admission: Admission,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = match query {
        None => Vec::new(),
        Some(q) => serde_urlencoded_pairs(&q)?,
    };
    run(&state, &admission, &headers, pairs).await
}

/// `POST /v1/stats/messages:query`: the same parameters as a JSON object.
pub async fn post_stats(
    State(state): State<Arc<AppState>>,
    admission: Admission,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let pairs = params::pairs_from_json(&body)
        .map_err(|e| ApiError::invalid(e.param.clone(), e.to_string()))?;
    run(&state, &admission, &headers, pairs).await
}

fn serde_urlencoded_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    // axum's Query extractor is built on serde_urlencoded; decoding into pairs keeps
    // repeated names, which a map would lose.
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| ApiError::invalid("query", "unparsable query string"))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::invalid("query", e.body_text()))
}

async fn run(
    state: &AppState,
    admission: &Admission,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let (answer, permits) = state
        .timed("stats", answer(state, admission, headers, pairs))
        .await?;
    Ok(send(answer, permits, state.send_deadline))
}

/// What an answer holds until its last byte is sent: the tenant's query slot and the
/// service's statistics slot.
type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// Bytes per frame of a statistics answer.
const FRAME: usize = 64 * 1024;

/// The answer as a response whose body holds the statistics slot until the last byte left
/// (or the client went away, or `deadline` passed): a slow reader occupies a slot, never
/// unbounded memory.
fn send(answer: Vec<u8>, permit: Permits, deadline: Duration) -> Response {
    let answer = Bytes::from(answer);
    let until = tokio::time::Instant::now() + deadline;
    let frames = futures::stream::unfold((answer, permit), move |(rest, permit)| async move {
        if rest.is_empty() {
            return None;
        }
        if tokio::time::Instant::now() > until {
            let late = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not take the answer in time",
            );
            return Some((Err(late), (Bytes::new(), permit)));
        }
        let mut rest = rest;
        let frame = rest.split_to(rest.len().min(FRAME));
        Some((Ok::<_, std::io::Error>(frame), (rest, permit)))
    });
    let mut response = Body::from_stream(frames).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn answer(
    state: &AppState,
    admission: &Admission,
    headers: &HeaderMap,
    mut pairs: Vec<(String, String)>,
) -> Result<(Vec<u8>, Permits), ApiError> {
    let tenant = admission.tenant();
    // `source` is an operator's override (rollup|raw|auto) used to compare the two paths.
    let forced = take(&mut pairs, "source")?;
    // The header means what the parameter means, and is checked like it (as message
    // reads check it): a header that is not text is a 400, never ignored.
    if !pairs.iter().any(|(n, _)| n == "consistency_token") {
        if let Some(token) = crate::reads::token_of(None, headers)? {
            pairs.push(("consistency_token".into(), token.to_string()));
        }
    }
    let now = Utc::now();
    let q = params::parse(&pairs, now)
        .map_err(|e| ApiError::invalid(e.param.clone(), e.to_string()))?;
    let refusal = engine::rollup_refusal(&q);
    let source = match forced.as_deref() {
        None | Some("auto") => {
            if refusal.is_none() {
                Source::Rollup
            } else {
                Source::Raw
            }
        }
        Some("raw") => Source::Raw,
        Some("rollup") => match refusal {
            None => Source::Rollup,
            Some(why) => {
                return Err(ApiError::invalid(
                    "source",
                    format!("source: the rollup cannot answer this query exactly: {why}"),
                ))
            }
        },
        Some(_) => {
            return Err(ApiError::invalid(
                "source",
                "source: expected auto, rollup or raw",
            ))
        }
    };

    // The tenant's own slot and budget before anything is read or waited for: a tenant
    // over them is refused without taking a statistics slot another tenant needs.
    let query_slot = admission.query(cost::of(&q, source))?;
    let (version, consistent) = crate::reads::prepare(
        state,
        tenant,
        q.consistency_token,
        Duration::from_millis(q.wait_ms),
    )
    .await?;
    // Bounded concurrency: each answer's memory is bounded by the answer limits, so their
    // number bounds the service's. The slot is held until the answer has been sent.
    let permit = state.stats_slots.acquire().await?;
    let generation = read_model::versions::generation_of(&state.read, version)
        .await
        .map_err(db_error)?
        .unwrap_or(1);
    // Per-tag series count a message under each of its tags: the overall total is then
    // computed without that split instead of summed.
    let ungrouped: Option<StatsQuery> = q.group_by.contains(&Dimension::Tag).then(|| {
        let mut ungrouped = q.clone();
        ungrouped.group_by.clear();
        ungrouped
    });
    let overall = async {
        let Some(ungrouped) = &ungrouped else {
            return Ok(None);
        };
        let source = if engine::rollup_refusal(ungrouped).is_none() && source == Source::Rollup {
            Source::Rollup
        } else {
            Source::Raw
        };
        let (t, _) = compute(state, ungrouped, tenant.id, version, generation, source).await?;
        let mut cell = engine::Cell::default();
        for cells in t.values() {
            for c in cells.values() {
                cell.merge(c);
            }
        }
        Ok(Some(cell))
    };
    // The table, the overall total and how current the version is are read at once, each
    // on its own connection: each is round trips of its own, and one after the other they
    // added up in the answer's time.
    let ((table, level), overall, freshness) = tokio::try_join!(
        compute(state, &q, tenant.id, version, generation, source),
        overall,
        state.freshness(version, tenant, consistent),
    )?;
    let with_engagement = engine::reports_engagement(&q);
    let bytes = answer::write(&answer::Parts {
        q: &q,
        table: &table,
        overall: overall.as_ref(),
        source,
        level: level.map(|l| l.name()),
        freshness: &freshness,
        now,
        with_engagement,
    })
    .map_err(|e| ApiError::internal(&e))?;
    Ok((bytes, (query_slot, permit)))
}

/// The table of `q` from `source`: the rollup level that fits it on a generation-2
/// version, the generation-1 15-minute tables on an older one, or the raw events. Returns
/// the rollup level read, if any.
async fn compute(
    state: &AppState,
    q: &StatsQuery,
    tenant: uuid::Uuid,
    version: i32,
    generation: i32,
    source: Source,
) -> Result<(engine::Table, Option<read_model::rollup::Level>), ApiError> {
    use read_model::rollup::{Level, GENERATION};
    let computed = match source {
        Source::Raw => engine::compute(&state.read, q, tenant, version, Source::Raw)
            .await
            .map(|t| (t, None)),
        Source::Rollup if generation >= GENERATION => {
            let plan = rollups::plan(q);
            rollups::compute(&state.read, q, tenant, version, &plan)
                .await
                .map(|t| (t, rollups::level_of(&plan)))
        }
        Source::Rollup => engine::compute(&state.read, q, tenant, version, Source::Rollup)
            .await
            .map(|t| (t, Some(Level::Quarter))),
    };
    computed.map_err(compute_error)
}

fn take(pairs: &mut Vec<(String, String)>, name: &str) -> Result<Option<String>, ApiError> {
    let found: Vec<String> = pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .collect();
    pairs.retain(|(n, _)| n != name);
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        _ => Err(ApiError::invalid(
            name,
            format!("{name}: given more than once"),
        )),
    }
}
