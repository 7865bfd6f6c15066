//! The HTTP API, Agentripe's paths and shapes.

mod agents;
mod purchase;
mod register;
mod tasks;
mod vendor;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    http::header,
    response::IntoResponse,
    routing::{MethodRouter, get, post},
};
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::{ApiError, AppState};

/// The API's document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Every route, in one table: the router is built from it, and a test holds the OpenAPI document to it.
fn routes() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("/health", get(health)),
        ("/openapi.json", get(openapi)),
        ("/agents", get(agents::list)),
        ("/agents/register", post(register::register)),
        ("/agents/{agent_id}", get(agents::show)),
        ("/discovery/resources", get(agents::discovery)),
        ("/tasks/{task_id}", get(tasks::show)),
        ("/tasks/{task_id}/result", get(tasks::result)),
        ("/vendor/tasks", get(vendor::list)),
        ("/vendor/tasks/{task_id}/start", post(vendor::start)),
        ("/vendor/tasks/{task_id}/complete", post(vendor::complete)),
        ("/vendor/tasks/{task_id}/fail", post(vendor::fail)),
        ("/{agent_id}/{service_path}", get(purchase::purchase).post(purchase::purchase)),
    ]
}

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| router.route(path, methods))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
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
