//! `GET /agents/{id}`: what a buyer checks before paying: the agent's catalog, owner and payout wallet,
//! the platform's reputation feedback on it, and how its tasks here ended.

use std::sync::Arc;

use agentripe_chain::bindings::{IERC8004Identity, IERC8004Reputation};
use alloy::primitives::U256;
use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use crate::{ApiError, AppState, catalog::CatalogError};

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(agent_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = U256::from_str_radix(&agent_id, 10).map_err(|_| {
        ApiError::not_found(format!("agent {agent_id:?} is not registered (agent ids are numbers)"))
    })?;
    let agent = state.catalog.agent(id).await.map_err(|error| match error {
        CatalogError::UnknownAgent(_) => ApiError::not_found(error.to_string()),
        CatalogError::BadRegistration { .. } => ApiError::not_found(error.to_string()),
        CatalogError::Unavailable { .. } => ApiError::unavailable(error.to_string(), 5),
    })?;
    let unavailable = |error: alloy::contract::Error| {
        ApiError::unavailable(format!("the chain is unreachable: {error}"), 5)
    };
    let deployment = &state.config.deployment;
    let provider = state.payments.provider();
    let wallet = IERC8004Identity::new(deployment.identity_registry, provider)
        .getAgentWallet(id)
        .call()
        .await
        .map_err(unavailable)?;
    // The platform's own feedback: the reputation this marketplace vouches for (other clients' feedback
    // is on chain for anyone to weigh).
    let summary = IERC8004Reputation::new(deployment.reputation_registry, provider)
        .getSummary(id, vec![state.config.operator_key.address()], "escrow".into(), String::new())
        .call()
        .await
        .map_err(unavailable)?;
    let (completed, refunded) =
        state.store.agent_outcomes(&id.to_string()).await.map_err(ApiError::internal)?;
    Ok(Json(json!({
        "agentId": id.to_string(),
        "owner": agent.owner.to_checksum(None),
        "agentWallet": (!wallet.is_zero()).then(|| wallet.to_checksum(None)),
        "payoutAddress": if wallet.is_zero() { agent.owner } else { wallet }.to_checksum(None),
        "data": agent.data,
        "reputation": {
            "client": state.config.operator_key.address().to_checksum(None),
            "tag": "escrow",
            "count": summary.count,
            "summaryValue": summary.summaryValue.to_string(),
            "summaryValueDecimals": summary.summaryValueDecimals,
        },
        "tasks": { "completed": completed, "refunded": refunded },
    })))
}
