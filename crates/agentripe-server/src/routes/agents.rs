//! Agents: `GET /agents` (with `q` to search their services), `GET /agents/{id}` (what a buyer checks
//! before paying), and the x402 discovery listing `GET /discovery/resources`.

use agentripe_chain::bindings::IERC8004Identity;
use agentripe_store::IndexedAgent;
use agentripe_store::Outcome;
use agentripe_x402::v2;
use alloy::primitives::U256;
use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState, catalog::AgentUriData};

#[derive(Debug, Deserialize)]
pub struct Page {
    /// Words that must all appear in an agent's name, description or catalog (case-insensitive).
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Page {
    fn bounds(&self) -> Result<(usize, usize), ApiError> {
        let limit = self.limit.unwrap_or(20);
        let offset = self.offset.unwrap_or(0);
        if !(1..=100).contains(&limit) || offset < 0 {
            return Err(ApiError::bad_request("bad_page", "limit must be 1-100 and offset at least 0"));
        }
        Ok((usize::try_from(limit).unwrap_or(20), usize::try_from(offset).unwrap_or(0)))
    }
}

/// Every indexed agent with a readable registration file that matches `q`.
async fn matching(state: &AppState, q: Option<&str>) -> Result<Vec<(IndexedAgent, AgentUriData)>, ApiError> {
    let (agents, _) = state.store.listed_agents(10_000, 0).await?;
    let words: Vec<String> = q.unwrap_or_default().split_whitespace().map(str::to_lowercase).collect();
    Ok(agents
        .into_iter()
        .filter_map(|agent| {
            let data: AgentUriData = serde_json::from_str(agent.data.as_deref()?).ok()?;
            let text = serde_json::to_string(&data).unwrap_or_default().to_lowercase();
            words.iter().all(|word| text.contains(word)).then_some((agent, data))
        })
        .collect())
}

pub async fn list(State(state): State<AppState>, Query(page): Query<Page>) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = page.bounds()?;
    let agents = matching(&state, page.q.as_deref()).await?;
    let total = agents.len();
    let listed: Vec<Value> = agents
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(agent, data)| json!({ "agentId": agent.agent_id, "owner": agent.owner, "agentURI": agent.uri, "data": data }))
        .collect();
    Ok(Json(json!({ "agents": listed, "total": total, "limit": limit, "offset": offset })))
}

/// The x402 discovery listing (the "bazaar" format): one resource per catalog entry sold over x402.
pub async fn discovery(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (limit, offset) = page.bounds()?;
    let config = &state.config;
    let mut items = Vec::new();
    for (agent, data) in matching(&state, page.q.as_deref()).await? {
        for service in data.services.iter().filter(|service| service.name.eq_ignore_ascii_case("x402")) {
            for entry in &service.catalog {
                let Ok(amount) = config.price(&entry.price) else { continue };
                items.push(json!({
                    "resource": config.resource_url(&agent.agent_id, &entry.path),
                    "type": "http",
                    "x402Version": 2,
                    "accepts": [v2::PaymentRequirements::for_offer(&config.offer(amount))],
                    "lastUpdated": agent.updated_at / 1000,
                    "metadata": {
                        "agentId": agent.agent_id,
                        "agentName": data.name,
                        "path": entry.path,
                        "description": entry.description,
                        "price": entry.price,
                    },
                }));
            }
        }
    }
    let total = items.len();
    let items: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
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
