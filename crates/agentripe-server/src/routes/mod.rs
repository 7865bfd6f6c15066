//! The HTTP API, Agentripe's paths and shapes.

mod agents;
mod buyer;
mod json;
mod payments;
mod purchase;
mod rate_limit;
mod register;
mod tasks;
mod vendor;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::{ApiError, AppState};

/// The API's document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Every route, in one table: the router is built from it, and a test holds the OpenAPI document to it.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/health", get(health)),
        ("/openapi.json", get(openapi)),
        ("/agents", get(agents::list)),
        ("/agents/register", post(register::register)),
        ("/agents/{agent_id}", get(agents::show)),
        ("/discovery/resources", get(agents::discovery)),
        ("/payments/{payer}/{nonce}", get(payments::show)),
        ("/buyer/tasks", get(buyer::list)),
        ("/tasks/{task_id}", get(tasks::show)),
        ("/tasks/{task_id}/result", get(tasks::result)),
        ("/vendor/tasks", get(vendor::list)),
        ("/vendor/tasks/{task_id}/start", post(vendor::start)),
        ("/vendor/tasks/{task_id}/complete", post(vendor::complete)),
        ("/vendor/tasks/{task_id}/fail", post(vendor::fail)),
        ("/{agent_id}/{service_path}", get(purchase::purchase).post(purchase::purchase)),
    ]
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let rate_limit = state.config.rate_limit;
    let router = routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| router.route(path, methods))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method",
            )
        })
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(request_limits))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    match rate_limit {
        Some(limit) => rate_limit::limited(router, limit),
        None => router,
    }
}

/// The longest request target served; longer ones get a JSON 414 (hyper itself answers an empty 414
/// only past 64 KiB).
const MAX_URI_BYTES: usize = 8 * 1024;
/// The most headers, and header bytes, a request may carry; beyond, a JSON 431 (hyper itself answers an
/// empty 431 only past `http_server::MAX_HEADERS` headers or its buffer).
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Refuses requests whose target or headers are too large, with the API's JSON error.
async fn request_limits(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if request.uri().to_string().len() > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let headers = request.headers();
    let header_bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Every rejection is the API's JSON error, whoever made it: axum's extractors (a query string that does
/// not parse, a path that is not UTF-8) answer plain text, which becomes `{"error", "message"}` here.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    // Rejection texts are short; anything longer is cut, not echoed whole.
    let text = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let message =
        if message.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { message };
    ApiError::new(status, code, message).into_response()
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// Up, the escrow it pays into, and how much ETH the operator has left to pay for every write (read by
/// the reconciler, not per request).
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let unrecorded = state.escrow_audit.surplus().map(|surplus| surplus.to_string());
    let deployment = &state.config.deployment;
    Json(json!({
        "status": "ok",
        "operator": state.operator_funds.report(),
        "escrow": {
            "address": deployment.agentripe.to_checksum(None),
            "chainId": deployment.chain_id,
            "token": deployment.usdc.to_checksum(None),
            // Token units in the escrow that no deposit accounts for (see `agentripe refund-unrecorded`).
            "unrecorded": unrecorded,
            // Deposits whose payouts kept reverting on chain, no longer sent: the log names them.
            "payoutsStuck": state.money_out.stuck(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `{agent_id}` and `{agentId}` are the same path.
    fn shape(path: &str) -> String {
        path.split('/')
            .map(|segment| if segment.starts_with('{') { "{}" } else { segment })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn the_openapi_document_names_every_route_and_no_other() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let documented: BTreeSet<String> =
            document["paths"].as_object().expect("paths").keys().map(|path| shape(path)).collect();
        let routed: BTreeSet<String> = routes().iter().map(|(path, _)| shape(path)).collect();
        assert_eq!(documented, routed);
    }
}
