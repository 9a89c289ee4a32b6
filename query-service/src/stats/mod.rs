//! `GET /v1/stats/messages` and `POST /v1/stats/messages:query`: time-bucketed message
//! statistics (see `docs/query-api.md`).

pub mod answer;
pub mod buckets;
pub mod engine;
pub mod params;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::Utc;
use service_kit::auth::Tenant;
use service_kit::http_error::{ApiError, ApiJson};

use self::answer::StatsAnswer;
use self::engine::Source;
use self::params::{Dimension, StatsQuery};
use crate::{db_error, AppState};

/// `GET /v1/stats/messages`.
pub async fn get_stats(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<StatsAnswer>, ApiError> {
    let pairs: Vec<(String, String)> = match query {
        None => Vec::new(),
        Some(q) => serde_urlencoded_pairs(&q)?,
    };
    run(&state, tenant, &headers, pairs).await
}

/// `POST /v1/stats/messages:query`: the same parameters as a JSON object.
pub async fn post_stats(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<StatsAnswer>, ApiError> {
    let pairs = params::pairs_from_json(&body)
        .map_err(|e| ApiError::invalid(e.param.clone(), e.to_string()))?;
    run(&state, tenant, &headers, pairs).await
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
    tenant: Tenant,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
) -> Result<Json<StatsAnswer>, ApiError> {
    state
        .timed("stats", answer(state, tenant, headers, pairs))
        .await
}

async fn answer(
    state: &AppState,
    tenant: Tenant,
    headers: &HeaderMap,
    mut pairs: Vec<(String, String)>,
) -> Result<Json<StatsAnswer>, ApiError> {
    // `source` is an operator's override (rollup|raw|auto) used to compare the two paths.
    let forced = take(&mut pairs, "source")?;
    if let Some(token) = headers
        .get("consistency-token")
        .and_then(|v| v.to_str().ok())
    {
        if !pairs.iter().any(|(n, _)| n == "consistency_token") {
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

    let (version, consistent) = crate::reads::prepare(
        state,
        tenant,
        q.consistency_token,
        Duration::from_millis(q.wait_ms),
    )
    .await?;
    let table = engine::compute(&state.read, &q, tenant.id, version, source)
        .await
        .map_err(db_error)?;
    let overall = if q.group_by.contains(&Dimension::Tag) {
        // Per-tag series count a message under each of its tags: the overall total is
        // computed without that split instead of summed.
        let mut ungrouped: StatsQuery = q.clone();
        ungrouped.group_by.clear();
        let source = if engine::rollup_refusal(&ungrouped).is_none() && source == Source::Rollup {
            Source::Rollup
        } else {
            Source::Raw
        };
        let t = engine::compute(&state.read, &ungrouped, tenant.id, version, source)
            .await
            .map_err(db_error)?;
        let mut cell = engine::Cell::default();
        for cells in t.values() {
            for c in cells.values() {
                cell.merge(c);
            }
        }
        Some(cell)
    } else {
        None
    };
    let freshness = state.freshness(version, consistent).await?;
    let with_engagement = engine::reports_engagement(&q);
    Ok(Json(answer::assemble(
        &q,
        table,
        overall,
        source,
        freshness,
        now,
        with_engagement,
    )))
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
