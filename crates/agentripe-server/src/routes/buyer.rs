//! `GET /buyer/tasks`: a buyer's own tasks (newest first, as it may read them) and its payments still in
//! flight, signed with `X-Buyer-Address`, `X-Timestamp` and `X-Signature`. What a buyer whose answer was
//! lost uses to find the task its payment became.

use agentripe_store::Store;
use axum::{
    Json,
    extract::{Query, State},
    http::HeaderMap,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    payments::payment_json,
    tasks::{Audience, task_json},
};
use crate::{
    ApiError,
    util::{hex, now_secs},
    vendor_auth::verify_buyer,
};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
}

pub async fn list(
    State(store): State<Store>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let buyer = hex(verify_buyer(&headers, now_secs())?);
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("bad_limit", "limit must be between 1 and 200"));
    }
    let tasks = store.buyer_tasks(&buyer, limit).await?;
    let in_flight: Vec<Value> =
        store.payments_in_flight(&buyer, limit).await?.iter().map(payment_json).collect();
    Ok(Json(json!({
        "tasks": tasks.iter().map(|task| task_json(task, Audience::Buyer)).collect::<Vec<_>>(),
        "paymentsInFlight": in_flight,
    })))
}
