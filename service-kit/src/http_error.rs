//! The one JSON error shape of every Herald HTTP answer that is not a success:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.
//!
//! Libraries return typed errors; each service maps them to an [`ApiError`] once, at its
//! HTTP edge. The extractors here replace axum's plain-text rejections so that malformed
//! JSON, a wrong content type or an oversize body also get this shape.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::{self, JsonError};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `invalid_field`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The offending field or parameter, when one is to blame.
    pub field: Option<String>,
    /// Seconds the client should wait before retrying (adds `Retry-After`).
    pub retry_after: Option<u32>,
    /// The quota a refusal hit, when one did (boxed: errors travel in every `Result`).
    pub limit: Option<Box<LimitHit>>,
}

/// The quota a refused request hit, as the error answer names it (`error.limit`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitHit {
    /// Which quota: `requests_per_second`, `concurrent_requests`, ...
    pub name: String,
    /// The tenant's quota (its rate, or its concurrency).
    pub value: u32,
    /// The burst above the rate, for rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// The wire form of [`ApiError`].
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inner object of [`ErrorBody`].
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
    /// Offending field, or null.
    pub field: Option<String>,
    /// The quota hit, on quota refusals only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitHit>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
            retry_after: None,
            limit: None,
        }
    }

    /// Names the field or parameter at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Replaces the code (e.g. a more specific `message_not_found`).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    /// Names the quota a refusal hit.
    pub fn with_limit(mut self, limit: LimitHit) -> Self {
        self.limit = Some(Box::new(limit));
        self
    }

    /// Asks the client to retry after `seconds`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 for an invalid field or parameter.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_field", message).with_field(field)
    }

    /// 404 for something that does not exist (or belongs to another tenant).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 503 for a dependency that is down; the cause is logged, not shown.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a dependency of this service is unavailable; retry later",
        )
        .with_retry_after(1)
    }

    /// 500 for a defect on Herald's side; the cause is logged, not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
                limit: self.limit.map(|l| *l),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Malformed(text) => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_json", text)
            }
            JsonError::Violation {
                field,
                code,
                message,
            } => {
                let mut err = Self::new(StatusCode::BAD_REQUEST, code, message);
                if !field.is_empty() {
                    err.field = Some(field);
                }
                err
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than this endpoint accepts",
            )
        } else {
            Self::new(e.status(), "unreadable_body", e.body_text())
        }
    }
}

/// `Content-Type: application/json` (or any `application/*+json`), else 415.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ))
    }
}

/// Builds `T` from a checked JSON value; a value of the wrong shape is a 400 naming the
/// path to it.
pub fn typed<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            },
        );
        if path != "." {
            err.field = Some(path);
        }
        err
    })
}

/// For a struct-typed field of a request body: accepts only a JSON object. serde's derived
/// structs also read a JSON array positionally (`["email", "a@b.co", ...]`), which no
/// client means; this closes that door.
pub fn object_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::de::Error;
    let map = serde_json::Map::<String, Value>::deserialize(d)?;
    T::deserialize(Value::Object(map)).map_err(D::Error::custom)
}

async fn object_body<S: Send + Sync>(req: Request, state: &S) -> Result<Value, ApiError> {
    require_json(req.headers())?;
    let bytes = Bytes::from_request(req, state).await?;
    Ok(Value::Object(json::parse_object(&bytes)?))
}

/// The request body as `T`: a JSON object under the strict syntax and the storage rule of
/// [`crate::json`] (both applied to the whole body), then typed. Every rejection is an
/// [`ApiError`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = object_body(req, state).await?;
        json::check_storable(&value, "")?;
        typed(value).map(Self)
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Like [`ApiJson`], but the storage rule is left to the handler, which applies
/// [`crate::json::check_storable`] to each part on its own: for bodies that carry many
/// independent commands (a batch), so one bad part fails only itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiEnvelope<T>(pub T);

impl<T, S> FromRequest<S> for ApiEnvelope<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = object_body(req, state).await?;
        typed(value).map(Self)
    }
}

/// An optional JSON object body: empty (or only whitespace) is `None`; anything else is
/// checked like [`ApiJson`].
#[derive(Debug, Clone, Default)]
pub struct OptionalApiJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        require_json(&headers)?;
        let value = Value::Object(json::parse_object(&bytes)?);
        json::check_storable(&value, "")?;
        typed(value).map(|t| Self(Some(t)))
    }
}

/// `axum::extract::Query`, but rejections become 400 [`ApiError`]s.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| {
                Self::Rejection::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
            })
    }
}

/// `axum::extract::Path`, but rejections become 400 (or 404) [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| {
                Self::Rejection::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text())
            })
    }
}

/// Fallback for unknown routes: a JSON 404 instead of an empty body.
pub async fn route_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_name_the_path() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            #[serde(deserialize_with = "object_only")]
            inner: Inner,
        }
        let e = typed::<Outer>(serde_json::json!({"inner": {"n": "x"}})).unwrap_err();
        assert_eq!(e.code, "invalid_body");
        assert_eq!(e.field.as_deref(), Some("inner"));
        let e = typed::<Outer>(serde_json::json!({"inner": [5]})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inner"), "{e}");
        assert!(typed::<Outer>(serde_json::json!({"inner": {"n": 5}})).is_ok());
    }

    #[tokio::test]
    async fn retry_after_header_and_body_shape() {
        let response = ApiError::new(StatusCode::CONFLICT, "conflict", "busy")
            .with_field("x")
            .with_retry_after(2)
            .into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()["retry-after"], "2");
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.error.code, "conflict");
        assert_eq!(body.error.field.as_deref(), Some("x"));
    }
}
