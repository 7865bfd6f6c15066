//! The buyer's view: `GET /tasks/{taskId}` and `GET /tasks/{taskId}/result` (202 while open, 200 when
//! final, 404 unknown). What a task says is private: its request and result are shown to its buyer
//! (signed with `X-Buyer-Address`, `X-Timestamp`, `X-Signature`) and to its agent's vendors (the vendor
//! headers); anyone else sees its status and where its money went. A buyer sees a deliverable only once
//! it was approved and the escrow released: rejected drafts are the vendor's alone, and the reviewer's
//! reasons reach the buyer without them (no free work). `PUBLIC_TASK_RESULTS` shows everyone what the
//! buyer sees, as Agentripe does.

use std::sync::Arc;

use agentripe_store::{EscrowStatus, Store, Task};
use alloy::primitives::Address;
use axum::{
    Json,
    extract::{FromRef, FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::{
    ApiError, AppState, Config,
    util::{hex, now_secs},
    vendor_auth::{Authorizations, BUYER_ADDRESS, VENDOR_ADDRESS, Vendor, verify_buyer},
};

/// How to read a task's private parts.
const HOW_TO_SIGN: &str = "The request and the result are private to the buyer and the agent's vendors: sign as the \
     buyer with X-Buyer-Address, X-Timestamp (UNIX seconds) and X-Signature (EIP-191 of \"{address}:{timestamp}\")";

/// Who is reading, as their headers prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// No signature.
    Anyone,
    /// Signed with `X-Buyer-Address`.
    Buyer(Address),
    /// Signed with the vendor headers, authorized for the agent on chain.
    Vendor(Vendor),
}

impl<S: Send + Sync> FromRequestParts<S> for Reader
where
    Arc<Authorizations>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.headers.contains_key(BUYER_ADDRESS) {
            return Ok(Self::Buyer(verify_buyer(&parts.headers, now_secs())?));
        }
        if parts.headers.contains_key(VENDOR_ADDRESS) {
            return Ok(Self::Vendor(Vendor::from_request_parts(parts, state).await?));
        }
        Ok(Self::Anyone)
    }
}

/// What a reader may see of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// Status and money only.
    Anyone,
    /// The request, the reviewer's reasons, and the result once approved and released.
    Buyer,
    /// Everything, drafts included.
    Vendor,
}

impl Audience {
    /// What `reader` may see of `task`; a signed reader who is neither its buyer nor its vendor is refused.
    pub fn of(reader: Reader, task: &Task, config: &Config) -> Result<Self, ApiError> {
        let forbidden = |who: String| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{who} may not read task {}", task.new.id),
            )
        };
        match reader {
            Reader::Buyer(address) if hex(address) == task.new.buyer => Ok(Self::Buyer),
            Reader::Buyer(address) => Err(forbidden(format!("{address}, who did not buy it,"))),
            Reader::Vendor(vendor) if vendor.agent_id.to_string() == task.new.agent_id => Ok(Self::Vendor),
            Reader::Vendor(vendor) => Err(forbidden(format!("a vendor of agent {}", vendor.agent_id))),
            Reader::Anyone if config.public_task_results => Ok(Self::Buyer),
            Reader::Anyone => Ok(Self::Anyone),
        }
    }

    /// Whether this audience sees the deliverable of `task` now.
    fn sees_result(self, task: &Task) -> bool {
        match self {
            Self::Vendor => true,
            Self::Buyer => task.escrow_status == EscrowStatus::Released,
            Self::Anyone => false,
        }
    }
}

/// A task as Agentripe's API shows it, with what `audience` may not see set to null.
pub fn task_json(task: &Task, audience: Audience) -> Value {
    let new = &task.new;
    let private = |value: &Option<String>| if audience == Audience::Anyone { None } else { value.clone() };
    json!({
        "id": new.id,
        "agentId": new.agent_id,
        "productId": new.product_id,
        "buyerAddress": new.buyer,
        "amount": new.amount,
        "requestPayload": private(&new.request_payload),
        "taskDetail": private(&new.task_detail),
        "taskMetadata": private(&new.task_metadata),
        "reviewerRequest": private(&new.reviewer_request),
        "status": task.status.as_str(),
        "result": if audience.sees_result(task) { task.result.clone() } else { None },
        "errorMessage": private(&task.error_message),
        "reviewRejectCount": task.review_reject_count,
        "reviewReason": private(&task.review_reason),
        "escrowStatus": task.escrow_status.as_str(),
        "escrowTx": task.escrow_tx,
        // After it the deposit can only be refunded: vendors skip work they cannot finish by then.
        "expiresAt": (new.expires_at > 0).then(|| iso(new.expires_at)),
        "createdAt": iso(task.created_at),
        "updatedAt": iso(task.updated_at),
    })
}

/// A stored time (ms) as the API writes times.
pub fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn load(store: &Store, task_id: &str) -> Result<Task, ApiError> {
    let id = task_id.to_ascii_lowercase();
    let valid = id.len() == 66 && id.starts_with("0x") && id[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError::not_found(format!(
            "task {task_id:?} not found (task ids are 0x-prefixed 32-byte hashes)"
        )));
    }
    store.task(&id).await?.ok_or_else(|| ApiError::not_found(format!("task {task_id} not found")))
}

/// The task with its review audit trail (reasons, never drafts).
pub async fn show(
    State(state): State<AppState>,
    reader: Reader,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = load(&state.store, &task_id).await?;
    let audience = Audience::of(reader, &task, &state.config)?;
    let reviews: Vec<Value> = if audience == Audience::Anyone {
        Vec::new()
    } else {
        state
            .store
            .reviews(&task.new.id)
            .await?
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
            .collect()
    };
    let mut body = task_json(&task, audience);
    body["reviews"] = Value::Array(reviews);
    let mut answer = json!({ "task": body });
    if audience == Audience::Anyone {
        answer["message"] = json!(HOW_TO_SIGN);
    }
    Ok(Json(answer))
}

pub async fn result(
    State(state): State<AppState>,
    reader: Reader,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let task = load(&state.store, &task_id).await?;
    let audience = Audience::of(reader, &task, &state.config)?;
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
    let shown = task_json(&task, audience);
    let mut answer = json!({
        "taskId": task.new.id,
        "status": task.status.as_str(),
        "result": shown["result"],
        "errorMessage": shown["errorMessage"],
        "escrowAction": escrow_action,
        "task": shown,
    });
    if audience == Audience::Anyone {
        answer["message"] = json!(HOW_TO_SIGN);
    }
    Ok(Json(answer).into_response())
}
