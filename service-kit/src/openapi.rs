//! `GET /openapi.json`: the OpenAPI 3.1 document of both HTTP APIs (command and query
//! service), embedded from `docs/openapi.json` so the served copy and the documented copy
//! are one file. A test in `query-service/tests/openapi.rs` keeps it in step with the code.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The document, as kept in `docs/openapi.json`.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

/// A router serving [`DOCUMENT`] at `GET /openapi.json` (no authentication: it describes
/// the API, it holds no tenant data).
pub fn router() -> Router {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
