//! The vendor's task loop, Agentripe's: `GET /vendor/tasks`, `POST /vendor/tasks/{id}/start`,
//! `/complete` with `{"result"}`, `/fail` with `{"errorMessage"}`. A vendor sees and touches only its
//! own agent's tasks.

use std::sync::Arc;

use agentripe_review::{ReviewError, ReviewInput, input_hash};
use agentripe_store::{EscrowStatus, ReviewRecord, Task, TaskStatus, Verdict};
use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::BytesRejection},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::tasks::task_json;
use crate::{ApiError, AppState, now_ms, vendor_auth::Vendor};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// One status, a comma-separated list, or `all`; default `pending`.
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
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
    let tasks = state
        .store
        .agent_tasks(&vendor.agent_id.to_string(), &statuses, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "tasks": tasks.iter().map(task_json).collect::<Vec<_>>() })))
}

/// The vendor's own task, or why not.
async fn own_task(state: &AppState, vendor: &Vendor, task_id: &str) -> Result<Task, ApiError> {
    let id = task_id.to_ascii_lowercase();
    let task = state
        .store
        .task(&id)
        .await
        .map_err(ApiError::internal)?
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

fn body_field(body: Result<Bytes, BytesRejection>, field: &'static str) -> Result<String, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::new(rejection.status(), "bad_body", rejection.body_text()))?;
    let value: Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request("bad_json", format!("the body must be a JSON object: {error}"))
    })?;
    match value.get(field) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
        _ => Err(ApiError::bad_request("bad_field", format!("{field} is required: a non-empty string"))),
    }
}

pub async fn start(
    State(state): State<Arc<AppState>>,
    vendor: Vendor,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state, &vendor, &task_id).await?;
    if !state.store.start_task(&task.new.id, now_ms()).await.map_err(ApiError::internal)? {
        let current = own_task(&state, &vendor, &task_id).await?;
        return Err(wrong_state(&current, "start", "pending or rejected"));
    }
    let task = own_task(&state, &vendor, &task_id).await?;
    Ok(Json(json!({ "task": task_json(&task) })))
}

pub async fn fail(
    State(state): State<Arc<AppState>>,
    vendor: Vendor,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state, &vendor, &task_id).await?;
    let message = body_field(body, "errorMessage")?;
    if !state.store.fail_task(&task.new.id, &message, now_ms()).await.map_err(ApiError::internal)? {
        let current = own_task(&state, &vendor, &task_id).await?;
        return Err(wrong_state(
            &current,
            "fail",
            "pending, processing or rejected, and no review in progress",
        ));
    }
    let escrow = settle_now(&state, &task.new.id).await;
    let task = own_task(&state, &vendor, &task_id).await?;
    Ok(Json(json!({ "task": task_json(&task), "escrowAction": escrow_action(escrow) })))
}

pub async fn complete(
    State(state): State<Arc<AppState>>,
    vendor: Vendor,
    Path(task_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state, &vendor, &task_id).await?;
    let result = body_field(body, "result")?;
    let now = now_ms();
    // A review left behind by a crash is taken over after this long.
    let stale = now - 10 * 60 * 1000;
    if !state.store.begin_review(&task.new.id, now, stale).await.map_err(ApiError::internal)? {
        let current = own_task(&state, &vendor, &task_id).await?;
        if current.escrow_status == EscrowStatus::Deposited
            && matches!(current.status, TaskStatus::Processing | TaskStatus::Rejected)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "review_in_progress",
                "another submission of this task is being reviewed",
            ));
        }
        return Err(wrong_state(&current, "complete", "processing or rejected (call /start first)"));
    }

    let verdict = match &task.new.reviewer_request {
        None => Ok(Verdict { approved: true, reason: "no review requested".into() }),
        Some(criteria) => {
            let input = ReviewInput {
                reviewer_request: criteria.clone(),
                task_detail: task.new.task_detail.clone(),
                task_metadata: task.new.task_metadata.clone(),
                result: result.clone(),
            };
            review(&state, &task, &input).await
        }
    };
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(ReviewOutcome::AlreadyReviewed(earlier)) => {
            state.store.abandon_review(&task.new.id).await.map_err(ApiError::internal)?;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_reviewed",
                format!(
                    "this exact result was already reviewed (attempt {}: {}); revise it before submitting again",
                    earlier.attempt, earlier.reason
                ),
            ));
        }
        Err(ReviewOutcome::NoVerdict(error)) => {
            // No verdict is not a rejection: nothing is counted and the money stays where it is.
            state.store.abandon_review(&task.new.id).await.map_err(ApiError::internal)?;
            let retry_after = if matches!(error, ReviewError::Unconfigured) { 300 } else { 30 };
            return Err(ApiError::unavailable(
                format!("{error}. Submit the same result again later."),
                retry_after,
            ));
        }
    };
    state
        .store
        .apply_verdict(&task.new.id, &result, &verdict, state.config.max_rejections, now_ms())
        .await
        .map_err(ApiError::internal)?;
    let escrow = settle_now(&state, &task.new.id).await;
    let task = own_task(&state, &vendor, &task_id).await?;
    Ok(Json(json!({
        "task": task_json(&task),
        "review": { "approved": verdict.approved, "reason": verdict.reason },
        "escrowAction": escrow_action(escrow),
    })))
}

/// Why a submission got no new verdict.
enum ReviewOutcome {
    /// The same input was reviewed before: it is never reviewed twice.
    AlreadyReviewed(ReviewRecord),
    /// The reviewer gave none.
    NoVerdict(ReviewError),
}

/// Reviews a submission once, and stores the verdict with what produced it.
async fn review(state: &AppState, task: &Task, input: &ReviewInput) -> Result<Verdict, ReviewOutcome> {
    let hash = input_hash(input);
    let earlier = state
        .store
        .reviews(&task.new.id)
        .await
        .map_err(|error| ReviewOutcome::NoVerdict(ReviewError::Unavailable(error.to_string())))?;
    if let Some(same) = earlier.iter().find(|review| review.input_hash == hash) {
        return Err(ReviewOutcome::AlreadyReviewed(same.clone()));
    }
    let review = state.reviewer.review(input).await.map_err(ReviewOutcome::NoVerdict)?;
    let attempt = i32::try_from(earlier.len()).unwrap_or(i32::MAX).saturating_add(1);
    let record = ReviewRecord::new(
        &task.new.id,
        attempt,
        &review.model,
        review.prompt_version,
        &hash,
        review.approved,
        &review.reason,
        i64::try_from(review.latency.as_millis()).unwrap_or(i64::MAX),
        review.total_tokens.map(i64::from),
        now_ms(),
    );
    if let Err(error) = state.store.record_review(&record).await {
        // The verdict is not applied unless it is on record.
        return Err(ReviewOutcome::NoVerdict(ReviewError::Unavailable(format!(
            "the verdict could not be stored: {error}"
        ))));
    }
    Ok(Verdict { approved: review.approved, reason: review.reason })
}

/// Moves the money a decision calls for, waiting for the chain within reason; what does not finish
/// now is finished by the reconciler.
async fn settle_now(state: &AppState, id: &str) -> Option<EscrowStatus> {
    let payouts = state.payouts.clone();
    let id = id.to_owned();
    let settling = tokio::spawn(async move { payouts.settle(&id).await });
    match tokio::time::timeout(state.config.purchase_timeout, settling).await {
        Ok(Ok(Ok(status))) => Some(status),
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "escrow not settled yet; the reconciler will finish it");
            None
        }
        _ => None,
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
