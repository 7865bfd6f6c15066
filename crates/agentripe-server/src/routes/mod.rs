//! The HTTP API, Agentripe's paths and shapes.

mod agents;
mod purchase;
mod tasks;
mod vendor;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use serde_json::json;
use tower_http::trace::TraceLayer;

use crate::{ApiError, AppState};

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/agents", get(agents::list))
        .route("/agents/{agent_id}", get(agents::show))
        .route("/discovery/resources", get(agents::discovery))
        .route("/tasks/{task_id}", get(tasks::show))
        .route("/tasks/{task_id}/result", get(tasks::result))
        .route("/vendor/tasks", get(vendor::list))
        .route("/vendor/tasks/{task_id}/start", post(vendor::start))
        .route("/vendor/tasks/{task_id}/complete", post(vendor::complete))
        .route("/vendor/tasks/{task_id}/fail", post(vendor::fail))
        .route("/{agent_id}/{service_path}", get(purchase::purchase).post(purchase::purchase))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}
