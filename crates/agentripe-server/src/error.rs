//! Errors as HTTP answers: the right status and a JSON body `{"error", "message"}` saying what is wrong.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::catalog::CatalogError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// Seconds after which a retry makes sense (503s).
    pub retry_after: Option<u64>,
    /// More fields of the body, beside `error` and `message` (what the caller can follow up with).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, details: serde_json::Map::new() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// Adds a field to the body.
    pub fn with(mut self, field: &str, value: serde_json::Value) -> Self {
        self.details.insert(field.to_owned(), value);
        self
    }

    /// A 503 whose cause (an RPC or HTTP error, which may carry a URL with a key in it, or an internal
    /// address a stranger could map) is logged, never answered.
    pub fn unavailable_because(
        message: impl Into<String>,
        cause: impl std::fmt::Display,
        retry_after: u64,
    ) -> Self {
        let message = message.into();
        tracing::warn!(%cause, "{message}");
        Self::unavailable(message, retry_after)
    }

    /// A failure of ours: logged in full, answered without internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; it has been logged")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.details;
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The database failing is ours to fix, not the caller's.
impl From<agentripe_store::StoreError> for ApiError {
    fn from(error: agentripe_store::StoreError) -> Self {
        Self::internal(error)
    }
}

/// An agent that is not for sale is not found; one we cannot read now is a retry later.
impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::UnknownAgent(_) | CatalogError::BadRegistration { .. } => {
                Self::not_found(error.to_string())
            }
            CatalogError::Unavailable { agent, .. } | CatalogError::Unreachable { agent, .. } => {
                Self::unavailable_because(
                    format!("agent {agent}'s catalog is unavailable right now"),
                    error,
                    5,
                )
            }
        }
    }
}

/// A body that could not be read: too large (413), too slow (408: it stalled between chunks or was not
/// whole by its deadline, see `http_server::HttpLimits`), or cut off (400).
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let timed_out =
            std::iter::successors(Some(&rejection as &dyn std::error::Error), |error| error.source())
                .any(|error| error.is::<tower_http::timeout::TimeoutError>());
        if timed_out {
            return Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body arrived too slowly; send it whole and without pauses",
            );
        }
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_body" };
        Self::new(status, code, rejection.body_text())
    }
}
