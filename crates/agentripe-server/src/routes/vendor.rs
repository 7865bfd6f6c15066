//! The vendor's task loop, Agentripe's: `GET /vendor/tasks`, `POST /vendor/tasks/{id}/start`,
//! `/complete` with `{"result"}`, `/fail` with `{"errorMessage"}`. A vendor sees and touches only its
//! own agent's tasks. These handlers parse, authenticate and answer; [`crate::verdicts`] decides.

use agentripe_review::ReviewError;
use agentripe_store::{EscrowStatus, Store, Task, TaskStatus};
use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    json::JsonBody,
    tasks::{Audience, iso, task_json},
};
use crate::{
    ApiError, AppState,
    util::now_ms,
    vendor_auth::Vendor,
    verdicts::{Decided, DecisionError},
};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// One status, a comma-separated list, or `all`; default `pending`.
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(store): State<Store>,
    vendor: Vendor,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = [
        TaskStatus::Pending,
        TaskStatus::Processing,
        TaskStatus::Rejected,
        TaskStatus::Completed,
        TaskStatus::Failed,
    ];
    let statuses = match query.status.as_deref().map(str::trim) {
        None | Some("") => vec![TaskStatus::Pending],
        Some("all") => all.to_vec(),
        Some(list) => list
            .split(',')
            .map(|status| {
                status.trim().parse().map_err(|_| {
                    ApiError::bad_request("bad_status", format!("unknown status {status:?}: use pending, processing, rejected, completed, failed or all"))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("bad_limit", "limit must be between 1 and 200"));
    }
    let tasks = store.agent_tasks(&vendor.agent_id.to_string(), &statuses, limit).await?;
    Ok(Json(
        json!({ "tasks": tasks.iter().map(|task| task_json(task, Audience::Vendor)).collect::<Vec<_>>() }),
    ))
}

/// The vendor's own task, or why not.
async fn own_task(store: &Store, vendor: &Vendor, task_id: &str) -> Result<Task, ApiError> {
    let task = store
        .task(&task_id.to_ascii_lowercase())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {task_id} not found")))?;
    if task.new.agent_id != vendor.agent_id.to_string() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("task {task_id} belongs to agent {}, not {}", task.new.agent_id, vendor.agent_id),
        ));
    }
    Ok(task)
}

/// 409 when the task's deposit has expired: it can only be refunded, so no work on it can be paid.
fn refuse_if_expired(task: &Task, action: &str) -> Result<(), ApiError> {
    if task.new.expires_at > 0 && task.new.expires_at <= now_ms() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "expired",
            format!(
                "cannot {action} task {}: its deposit expired at {} and can only be refunded to the buyer",
                task.new.id,
                iso(task.new.expires_at)
            ),
        ));
    }
    Ok(())
}

fn wrong_state(task: &Task, action: &str, allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "invalid_state",
        format!(
            "cannot {action} task {}: it is {} (escrow {}); {action} needs {allowed}",
            task.new.id,
            task.status.as_str(),
            task.escrow_status.as_str()
        ),
    )
}

/// A required non-empty text field.
fn required(field: &str, text: String) -> Result<String, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("bad_field", format!("{field} is required: a non-empty string")));
    }
    Ok(text)
}

pub async fn start(
    State(store): State<Store>,
    vendor: Vendor,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&store, &vendor, &task_id).await?;
    refuse_if_expired(&task, "start")?;
    let started = store.start_task(&task.new.id, now_ms()).await?;
    let task = own_task(&store, &vendor, &task_id).await?;
    if !started {
        return Err(wrong_state(&task, "start", "pending or rejected"));
    }
    Ok(Json(json!({ "task": task_json(&task, Audience::Vendor) })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailBody {
    #[serde(default)]
    error_message: String,
}

pub async fn fail(
    State(state): State<AppState>,
    vendor: Vendor,
    Path(task_id): Path<String>,
    JsonBody(body): JsonBody<FailBody>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state.store, &vendor, &task_id).await?;
    let message = required("errorMessage", body.error_message)?;
    let decided = state.verdicts.fail(&task, &message).await.map_err(|error| match error {
        DecisionError::NotOpen(task) => {
            wrong_state(&task, "fail", "pending, processing or rejected, and no review in progress")
        }
        other => decision_error(other),
    })?;
    answer(&state.store, &vendor, &task_id, decided).await
}

#[derive(Debug, Deserialize)]
pub struct CompleteBody {
    #[serde(default)]
    result: String,
}

pub async fn complete(
    State(state): State<AppState>,
    vendor: Vendor,
    Path(task_id): Path<String>,
    JsonBody(body): JsonBody<CompleteBody>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state.store, &vendor, &task_id).await?;
    let result = required("result", body.result)?;
    refuse_if_expired(&task, "complete")?;
    // On a task of its own, so that a vendor hanging up mid-review leaves no claim to wait out.
    let verdicts = state.verdicts.clone();
    let submitted = tokio::spawn(async move { verdicts.submit(&task, &result).await });
    let submitted =
        submitted.await.map_err(|error| ApiError::internal(format!("a review panicked: {error}")))?;
    let decided = submitted.map_err(|error| match error {
        DecisionError::NotOpen(task) => {
            wrong_state(&task, "complete", "processing or rejected (call /start first)")
        }
        other => decision_error(other),
    })?;
    answer(&state.store, &vendor, &task_id, decided).await
}

/// The task after a decision, the verdict if there was one, and what happened to the money.
async fn answer(
    store: &Store,
    vendor: &Vendor,
    task_id: &str,
    decided: Decided,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(store, vendor, task_id).await?;
    let mut body =
        json!({ "task": task_json(&task, Audience::Vendor), "escrowAction": escrow_action(decided.escrow) });
    if let Some(verdict) = decided.verdict {
        body["review"] = json!({ "approved": verdict.approved, "reason": verdict.reason });
    }
    Ok(Json(body))
}

fn decision_error(error: DecisionError) -> ApiError {
    match error {
        DecisionError::UnderReview => ApiError::new(
            StatusCode::CONFLICT,
            "review_in_progress",
            "another submission of this task is being reviewed",
        ),
        DecisionError::AlreadyReviewed(earlier) => ApiError::new(
            StatusCode::CONFLICT,
            "already_reviewed",
            format!(
                "this exact result was already reviewed (attempt {}: {}); revise it before submitting again",
                earlier.attempt, earlier.reason
            ),
        ),
        // No verdict is not a rejection: nothing is counted and the money stays where it is.
        DecisionError::NoVerdict(error) => {
            let retry_after = if matches!(error, ReviewError::Unconfigured) { 300 } else { 30 };
            let message = match error {
                ReviewError::Unconfigured => error.to_string(),
                // The endpoint's own error may name its URL: logged, not answered.
                ReviewError::Unavailable(_) => {
                    "the reviewer gave no verdict (it is down, slow or answered something that is not a verdict); \
                     nothing was counted"
                        .to_owned()
                }
            };
            ApiError::unavailable_because(
                format!("{message}. Submit the same result again later."),
                error,
                retry_after,
            )
        }
        DecisionError::Superseded => ApiError::new(
            StatusCode::CONFLICT,
            "superseded",
            "the task changed while this submission was under review; nothing was applied. Read the task and try again",
        ),
        DecisionError::NotOpen(task) => wrong_state(&task, "act on", "an open task"),
        DecisionError::Store(error) => error.into(),
    }
}

/// Agentripe's `escrowAction`: what happened to the money in this call.
fn escrow_action(status: Option<EscrowStatus>) -> &'static str {
    match status {
        Some(EscrowStatus::Released) => "released",
        Some(EscrowStatus::Refunded) => "refunded",
        Some(EscrowStatus::Releasing) => "releasing",
        Some(EscrowStatus::Refunding) => "refunding",
        Some(EscrowStatus::Deposited) | None => "none",
    }
}
