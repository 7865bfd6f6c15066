//! The buyer's view: `GET /tasks/{taskId}` and `GET /tasks/{taskId}/result` (202 while open, 200 when
//! final, 404 unknown).

use std::sync::Arc;

use agentripe_store::{EscrowStatus, Task};
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// A task as Agentripe's API shows it.
pub fn task_json(task: &Task) -> Value {
    let new = &task.new;
    json!({
        "id": new.id,
        "agentId": new.agent_id,
        "productId": new.product_id,
        "buyerAddress": new.buyer,
        "amount": new.amount,
        "requestPayload": new.request_payload,
        "taskDetail": new.task_detail,
        "taskMetadata": new.task_metadata,
        "reviewerRequest": new.reviewer_request,
        "status": task.status.as_str(),
        "result": task.result,
        "errorMessage": task.error_message,
        "reviewRejectCount": task.review_reject_count,
        "reviewReason": task.review_reason,
        "escrowStatus": task.escrow_status.as_str(),
        "escrowTx": task.escrow_tx,
        "createdAt": iso(task.created_at),
        "updatedAt": iso(task.updated_at),
    })
}

fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn load(state: &AppState, task_id: &str) -> Result<Task, ApiError> {
    let id = task_id.to_ascii_lowercase();
    let valid = id.len() == 66 && id.starts_with("0x") && id[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError::not_found(format!(
            "task {task_id:?} not found (task ids are 0x-prefixed 32-byte hashes)"
        )));
    }
    state
        .store
        .task(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("task {task_id} not found")))
}

/// The task with its review audit trail, as the buyer and the vendor see it.
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = load(&state, &task_id).await?;
    let reviews = state.store.reviews(&task.new.id).await.map_err(ApiError::internal)?;
    let reviews: Vec<Value> = reviews
        .iter()
        .map(|review| {
            json!({
                "attempt": review.attempt,
                "approved": review.approved(),
                "reason": review.reason,
                "model": review.model,
                "promptVersion": review.prompt_version,
                "inputHash": review.input_hash,
                "latencyMs": review.latency_ms,
                "totalTokens": review.total_tokens,
                "createdAt": iso(review.created_at),
            })
        })
        .collect();
    let mut body = task_json(&task);
    body["reviews"] = Value::Array(reviews);
    Ok(Json(json!({ "task": body })))
}

pub async fn result(
    State(state): State<Arc<AppState>>,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let task = load(&state, &task_id).await?;
    let escrow_action = match task.escrow_status {
        // Still open: the money is locked, or its release or refund is not confirmed yet.
        EscrowStatus::Deposited | EscrowStatus::Releasing | EscrowStatus::Refunding => None,
        EscrowStatus::Released => Some("released"),
        EscrowStatus::Refunded => Some("refunded"),
    };
    let Some(escrow_action) = escrow_action else {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "taskId": task.new.id,
                "status": task.status.as_str(),
                "message": "The task is not finished yet; poll again.",
            })),
        )
            .into_response());
    };
    Ok(Json(json!({
        "taskId": task.new.id,
        "status": task.status.as_str(),
        "result": task.result,
        "errorMessage": task.error_message,
        "escrowAction": escrow_action,
        "task": task_json(&task),
    }))
    .into_response())
}
