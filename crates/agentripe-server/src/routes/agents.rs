//! Agents: `GET /agents` (with `q` to search their services), `GET /agents/{id}` (what a buyer checks
//! before paying), and the x402 discovery listing `GET /discovery/resources`.

use agentripe_chain::bindings::IERC8004Identity;
use agentripe_store::{MAX_QUERY_WORDS, Outcome};
use agentripe_x402::v2;
use alloy::primitives::U256;
use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    ApiError, AppState,
    catalog::{self, AgentUriData},
};

#[derive(Debug, Deserialize)]
pub struct Page {
    /// Words each of which must start a word of an agent's name, description or catalog (case-insensitive).
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Page {
    fn bounds(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(20);
        let offset = self.offset.unwrap_or(0);
        if !(1..=100).contains(&limit) || offset < 0 {
            return Err(ApiError::bad_request("bad_page", "limit must be 1-100 and offset at least 0"));
        }
        Ok((limit, offset))
    }

    /// The words of `q`, each to start a word of what is found.
    fn words(&self) -> Result<Vec<String>, ApiError> {
        let words = catalog::words(self.q.as_deref().unwrap_or_default());
        if words.len() > MAX_QUERY_WORDS {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("q may have at most {MAX_QUERY_WORDS} words"),
            ));
        }
        Ok(words)
    }
}

/// Agents matching `q`, found through the database's word index (never a scan per request).
pub async fn list(State(state): State<AppState>, Query(page): Query<Page>) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = page.bounds()?;
    let (agents, total) = state.store.search_agents(&page.words()?, limit, offset).await?;
    let listed: Vec<Value> = agents
        .into_iter()
        .filter_map(|agent| {
            let data: AgentUriData = serde_json::from_str(agent.data.as_deref()?).ok()?;
            Some(json!({ "agentId": agent.agent_id, "owner": agent.owner, "agentURI": agent.uri, "data": data }))
        })
        .collect();
    Ok(Json(json!({ "agents": listed, "total": total, "limit": limit, "offset": offset })))
}

/// The x402 discovery listing (the "bazaar" format): one resource per catalog entry sold over x402, at
/// this server's minimum price or more.
pub async fn discovery(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = page.bounds()?;
    let config = &state.config;
    let min_amount = i64::try_from(config.min_price).unwrap_or(i64::MAX);
    let (resources, total) = state.store.search_resources(&page.words()?, min_amount, limit, offset).await?;
    let items: Vec<Value> = resources
        .into_iter()
        .map(|(resource, updated_at)| {
            let offer = config.offer(U256::from(resource.amount));
            json!({
                "resource": config.resource_url(&resource.agent_id, &resource.path),
                "type": "http",
                "x402Version": 2,
                "accepts": [v2::PaymentRequirements::for_offer(&offer)],
                "lastUpdated": updated_at / 1000,
                "metadata": {
                    "agentId": resource.agent_id,
                    "agentName": resource.agent_name,
                    "path": resource.path,
                    "description": resource.description,
                    "price": resource.price,
                },
            })
        })
        .collect();
    Ok(Json(json!({
        "x402Version": 2,
        "items": items,
        "pagination": { "limit": limit, "offset": offset, "total": total },
    })))
}

pub async fn show(
    State(state): State<AppState>,
    Path(agent_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = U256::from_str_radix(&agent_id, 10).map_err(|_| {
        ApiError::not_found(format!("agent {agent_id:?} is not registered (agent ids are numbers)"))
    })?;
    let agent = state.catalog.agent(id).await?;
    let unavailable = |error: alloy::contract::Error| {
        ApiError::unavailable_because("the chain cannot be read right now", error, 5)
    };
    let deployment = &state.config.deployment;
    let provider = &state.provider;
    let wallet = IERC8004Identity::new(deployment.identity_registry, provider)
        .getAgentWallet(id)
        .call()
        .await
        .map_err(unavailable)?;
    // Counted from our own records, not getSummary: as cheap with a million entries as with one.
    let mut outcomes = serde_json::Map::new();
    for outcome in [Outcome::Released, Outcome::Rejected, Outcome::Failed, Outcome::Expired] {
        outcomes.insert(outcome.as_str().into(), json!(0));
    }
    for (outcome, count) in state.store.agent_outcomes(&id.to_string()).await? {
        outcomes.insert(outcome.as_str().into(), json!(count));
    }
    let completed = outcomes["released"].as_i64().unwrap_or_default();
    let refunded: i64 = outcomes.values().filter_map(Value::as_i64).sum::<i64>() - completed;
    Ok(Json(json!({
        "agentId": id.to_string(),
        "owner": agent.owner.to_checksum(None),
        "agentWallet": (!wallet.is_zero()).then(|| wallet.to_checksum(None)),
        "payoutAddress": if wallet.is_zero() { agent.owner } else { wallet }.to_checksum(None),
        "data": agent.data,
        // The platform's feedback on chain: client and tags, for readers to weigh it themselves.
        "reputation": {
            "client": state.config.operator_key.address().to_checksum(None),
            "tag1": "escrow",
            "tag2": ["released", "rejected", "failed", "expired"],
        },
        "tasks": { "completed": completed, "refunded": refunded, "outcomes": outcomes },
        "reviewedPurchases": super::purchase::reviewed_purchases(&state),
    })))
}
